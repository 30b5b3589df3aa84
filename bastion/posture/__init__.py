"""Posture and evidence: prove the controls (probe), report coverage and exceptions (report), list what is
called (inventory), detect drift (diff), and serve the admin dashboard.

Everything here reads the same compiled config the gateway runs (`bastion.compile.compile_config`), so what the
auditor sees is what the data plane enforces.
"""
