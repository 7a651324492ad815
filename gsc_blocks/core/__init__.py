"""Plain numpy cores behind the GNU Radio blocks; each tests without a flowgraph."""
