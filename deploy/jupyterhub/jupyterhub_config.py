"""JupyterHub for a labvmm class on one server: `jupyterhub -f deploy/jupyterhub/jupyterhub_config.py`.

Every setting a deployment changes is an environment variable (README.md beside this file):

    LABVMM_HUB_IP, LABVMM_HUB_PORT   where the hub's proxy listens (127.0.0.1:8000; a class
                                     behind a TLS reverse proxy keeps 127.0.0.1)
    LABVMM_HUB_STATE                 folder for the hub's database, cookie secret and proxy pid
    LABVMM_HUB_AUTH                  "pam" (system users and their passwords, the default) or
                                     "shared" (one class password, LABVMM_HUB_PASSWORD)
    LABVMM_HUB_USERS                 comma-separated user names allowed to log in
    LABVMM_HUB_ADMINS                comma-separated admin user names
    LABVMM_HUB_SPAWNER               "system" (servers run as the system users, the default)
                                     or "simple" (all as the hub's user, homes under LABVMM_HUB_HOMES)
    LABVMM_HUB_MEM, LABVMM_HUB_CPU   per-user limits ("2G", 0.5 cores by default)
    LABVMM_HUB_LIMITS                auto | cgroup2 | cgroup1 | rlimit | none
    LABVMM_HUB_COURSE                folder copied into each home as ~/labvmm (default: notebooks/)
    LABVMM_HUB_SINGLEUSER            the jupyterhub-singleuser of the environment with labvmm[lab]
    LABVMM_HUB_API_TOKEN             a token for the `labvmm-ops` service (measure.py and the
                                     tests use it to list, start and stop servers)
"""

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # labvmm_spawner.py beside this file

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)
env = os.environ.get

state = Path(env("LABVMM_HUB_STATE", os.getcwd())).resolve()
state.mkdir(parents=True, exist_ok=True)
c.JupyterHub.ip = env("LABVMM_HUB_IP", "127.0.0.1")
c.JupyterHub.port = int(env("LABVMM_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every student's server

users = {u.strip() for u in env("LABVMM_HUB_USERS", "").split(",") if u.strip()}
admins = {u.strip() for u in env("LABVMM_HUB_ADMINS", "").split(",") if u.strip()}
if env("LABVMM_HUB_AUTH", "pam") == "shared":
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = env("LABVMM_HUB_PASSWORD", "")
else:
    c.JupyterHub.authenticator_class = "pam"
if users:
    c.Authenticator.allowed_users = users
if admins:
    c.Authenticator.admin_users = admins

if env("LABVMM_HUB_SPAWNER", "system") == "simple":
    spawner = "LabvmmSimpleSpawner"
    homes = Path(env("LABVMM_HUB_HOMES", str(state / "homes"))).resolve()
    c.LabvmmSimpleSpawner.home_dir_template = str(homes / "{username}")
    if os.geteuid() == 0:  # every server runs as the hub's user, here root
        c.Spawner.args = ["--allow-root"]
else:
    spawner = "LabvmmSpawner"
c.JupyterHub.spawner_class = f"labvmm_spawner.{spawner}"

c.Spawner.mem_limit = env("LABVMM_HUB_MEM", "2G")
c.Spawner.cpu_limit = float(env("LABVMM_HUB_CPU", "0.5"))
c[spawner].limit_method = env("LABVMM_HUB_LIMITS", "auto")
c[spawner].course_dir = env("LABVMM_HUB_COURSE", str(HERE.parents[1] / "notebooks"))
c.Spawner.default_url = "/lab/tree/labvmm"
singleuser = env("LABVMM_HUB_SINGLEUSER") or shutil.which("jupyterhub-singleuser",
                                                          path=os.path.dirname(sys.executable)) or "jupyterhub-singleuser"
c.Spawner.cmd = [singleuser]
# The single-user environment's bin first: its python3 kernel is the one with labvmm.
c.Spawner.environment = {"PATH": f"{os.path.dirname(singleuser)}:/usr/local/bin:/usr/bin:/bin"}
# A class logging in at once starts many servers on two cores: give each time to come up.
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120

if env("LABVMM_HUB_API_TOKEN"):
    c.JupyterHub.services = [{"name": "labvmm-ops", "api_token": env("LABVMM_HUB_API_TOKEN")}]
    c.JupyterHub.load_roles = [{
        "name": "labvmm-ops", "services": ["labvmm-ops"],
        "scopes": ["admin:users", "admin:servers", "admin:server_state", "access:servers", "list:users"],
    }]
