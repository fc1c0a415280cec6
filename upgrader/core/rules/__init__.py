"""The compatibility rules: a versioned catalog (data, with sources) and pure checks over it.

``catalog`` loads ``catalog.json`` into frozen values and answers questions about it; ``facts`` is
the model of what was observed of a cluster; ``skew`` checks the version-skew policy on a cluster
state; ``checks`` finds the blockers and warnings for an upgrade. Checks return findings; callers
decide whether to refuse. Nothing here touches a cluster, a file other than the catalog, or a clock.
"""
