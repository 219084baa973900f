"""Helpers for tools/make_demo.py: synthetic conveyor renderer and the demo detector's training/export."""
