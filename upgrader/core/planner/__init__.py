"""The planner: a pure function from (facts, target, options, catalog) to a Plan.

``model`` holds the plan's values, ``core`` computes it, ``batching`` splits node upgrades into
drain batches. The planner needs no cluster, no database and no clock.
"""
