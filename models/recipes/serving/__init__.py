"""Checks of exported drafters inside the engines and libraries that load them (separate environments)."""
