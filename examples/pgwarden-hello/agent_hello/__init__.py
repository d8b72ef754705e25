"""Example pgwarden plugin: greets, and counts the tables of a database as a scheduled task."""
