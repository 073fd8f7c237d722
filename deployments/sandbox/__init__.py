"""Local sandbox platforms: one FastAPI server speaking each social platform's real contract.

Each platform lives on its own path prefix (`/linkedin`, `/x`, `/mastodon`, `/bluesky`,
`/instagram`, `/facebook`, `/threads`), so an adapter's base URL is
`http://127.0.0.1:PORT/<platform>`. Tests and the local stack drive it through `/_sandbox/*`,
OAuth clients and the consenting user included (`/_sandbox/oauth/*`, deployments/sandbox/oauth.py).
"""

from deployments.sandbox.app import create_sandbox_app, run_sandbox
from deployments.sandbox.core import Fault, FaultPlan, SandboxState, get_sandbox

__all__ = ["Fault", "FaultPlan", "SandboxState", "create_sandbox_app", "get_sandbox", "run_sandbox"]
