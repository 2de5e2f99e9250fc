"""The police duty room's tools: the console, its board, reports and their monthly delivery."""
