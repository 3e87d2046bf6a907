"""The whole SICOG cycle on the mini world (`sicog reproduce`): the plans (plans.py), the table's rows
(variants.py), resumable steps (steps.py), the cycle's steps returning typed outputs (cycle.py,
outputs.py), the run and its command (reproduce.py), and the report that reads the finished outputs
(report.py, diagnostics.py, plots.py). It sits on top of the other parts; none of them imports it."""
