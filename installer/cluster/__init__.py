"""The cluster file, its model and its validation: what every other side reads."""
