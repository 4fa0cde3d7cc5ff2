"""pyqmail: qmail 1.03 re-created in Python, one module per program."""
