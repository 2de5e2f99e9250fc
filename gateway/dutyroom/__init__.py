"""What duty rooms and schools read: the console, the board, the reports and their delivery."""
