"""Labelled data and what a model makes of it: datasets and person splits, labelled zips, per-photo results and
their exports, evaluation, metrics and reports, paired comparison of two models, label issues, training runs on
disk and the models a page can choose from.

Uses model/, faces/ and the ground floor; never video/.
"""
