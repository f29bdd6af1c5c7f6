"""Downstream evaluation tasks."""
