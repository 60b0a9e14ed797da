"""LHV test harness: boot the image on targets, judge serial logs, check the screen."""
