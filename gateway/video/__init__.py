"""Video linkage: the cameras that see a unit's place, and their snapshots on each alarm."""
