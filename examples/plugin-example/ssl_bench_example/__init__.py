"""An example third-party method package for ssl-bench."""
