"""Training, evaluation and benchmarks over fer_core (fer_core never imports them).

- the commands people run: train, evaluate, calibrate, compare, crossdomain, average_weights, results_table
  (``python -m training.<name>``);
- recipe/: what train.py is made of;
- experiments/ and benchmarks/: studies and measurements.
"""
