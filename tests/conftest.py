"""Root of the test tree: per-area fixtures live in each folder's conftest.py;
helpers shared across areas (broker, fake units, ptys) in tests/support/."""
