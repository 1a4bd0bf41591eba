"""Deployable services of the FashionNet platform, and the `fashion` command line."""
