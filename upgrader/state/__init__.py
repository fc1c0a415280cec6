"""The state store adapter: the only package that imports SQLAlchemy and Alembic.

``db`` opens engines (SQLite pragmas, schema gate), ``schema`` drives Alembic, ``orm`` holds the
table models, ``records`` the frozen domain records the facade returns, ``store`` the facade, and
``lease`` the per-cluster lock. ORM objects never leave this package.
"""
