"""Lenient readers for the containers models ship in. Each hands members back to
`analyzers.base.scan_source`, so every member is sniffed and scanned whatever its name."""
