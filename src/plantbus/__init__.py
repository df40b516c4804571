"""plantbus: an event-driven integration hub for manufacturers."""
