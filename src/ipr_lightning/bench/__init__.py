"""`ipr-bench`: SFT vs ETO vs IPR (and IPR's ablations) over seeds, from one config, with a
report (tables, CSV, plots) rebuilt from the run folders. See `plan.py` for the cells."""
