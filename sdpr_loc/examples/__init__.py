"""Worked examples runnable from the sdpr-loc command."""
