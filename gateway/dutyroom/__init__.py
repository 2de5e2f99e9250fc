"""The duty room's side: what the police see and how they acknowledge."""
