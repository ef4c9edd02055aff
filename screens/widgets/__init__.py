"""Widgets the console's screens share: the status strip, keyed tables, the ladder, form fields."""
