"""The team stack for real (tests/team_stack/conftest.py starts one for the whole folder).

One stack serves both modules: tests/conftest.py hands this folder to one pytest-xdist process
as a single unit, and the stack stops after its last test, before that process goes on. Measured
on a 2-core Intel Xeon (AMX), the folder alone: 391 s of CPU (all processes, servers included)
with one stack against 453 s with a stack per module side by side (410 s of wall time against
278: the other process fills the second core with the rest of the suite meanwhile).
"""
