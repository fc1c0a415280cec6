"""The object-store adapter: the only package that imports boto3 and botocore (``bucket``) and the
only one of the product that uses cryptography (``sealing``: a snapshot's client-side encryption)."""
