"""A real, local Kubernetes control plane for the operator and e2e tests.

Why this exists: our developer machines and CI have no Docker, so kind, minikube,
k3d and envtest's binary downloads cannot run. They do have Go and the Go module
proxy, so ``e2e/build-k8s-binaries.sh`` builds the real binaries (kube-apiserver,
kube-controller-manager, kube-scheduler, kubectl, etcd, kwok) into a cache
outside the repo, and this script runs them as plain local processes, all on
127.0.0.1 with free ports:

* etcd, its data on /dev/shm (tmpfs) with ``--unsafe-no-fsync``;
* kube-apiserver with RBAC and ``OwnerReferencesPermissionEnforcement`` (as on
  OpenShift), TLS from a throw-away CA made with ``openssl``;
* the project's CRDs (``crds/*.yaml``), the kwok StorageClass (default) and
  fake Nodes, applied and Established *before* the controller-manager starts,
  so that its garbage collector knows the custom kinds from the start;
* kube-controller-manager (every controller, incl. the garbage collector and
  the service-account token controller) and kube-scheduler;
* kwok, which plays the kubelets: it keeps the fake Nodes Ready, makes pods
  Running/Ready, completes Job pods and provisions/binds PVCs.

State lives in ``.cluster/`` of the repo (git-ignored): ``kubeconfig``, the PKI,
``state.json`` (pids, ports) and one log per process. Every process runs in its
own session; ``down`` stops them by PID (SIGTERM, then SIGKILL).

Usage::

    python e2e/cluster.py up       # start (or reuse a healthy running cluster)
    python e2e/cluster.py status   # exit 0 when healthy
    python e2e/cluster.py env      # eval "$(python e2e/cluster.py env)"
    python e2e/cluster.py down     # stop and wipe
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
STATE_DIR = Path(os.environ.get("SSO_CLUSTER_DIR", str(REPO / ".cluster"))).resolve()
BUILD_SCRIPT = REPO / "e2e" / "build-k8s-binaries.sh"
CRD_DIR = REPO / "crds"

SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"
# Made-up addresses from TEST-NET-2 (RFC 5737, never routed) that only end up
# as data: the apiserver's in the `kubernetes` Service endpoints (it must not
# be loopback, and a fixed one keeps the apiserver independent of the host's
# interfaces and routes), the fake Nodes' in their status. Nothing connects
# to either: the apiserver only listens on 127.0.0.1.
ADVERTISE_ADDRESS = "198.51.100.1"
FAKE_NODE_IP = "198.51.100.2"
NODE_NAMES = ("kwok-node-0", "kwok-node-1")
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"

# The order matters for `up` (and the reverse for `down`).
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
)

UP_TIMEOUT_S = 180.0


class ClusterError(RuntimeError):
    """Something the user has to look at; the message says what."""


class BinariesMissing(ClusterError):
    """`make k8s-binaries` has not run (retrying `up` cannot help)."""


def log(msg: str) -> None:
    print(f"[cluster] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- paths
@dataclass(frozen=True)
class Paths:
    """Where everything of one cluster lives."""

    state: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def state_file(self) -> Path:
        return self.state / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.state / ".lock"

    @property
    def etcd_data(self) -> Path:
        # tmpfs: etcd's fsyncs cost nothing and `down` leaves no disk litter.
        # Keyed by the state dir so two checkouts never share one.
        digest = hashlib.sha1(str(self.state).encode(), usedforsecurity=False).hexdigest()
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path("/tmp")
        return base / f"sso-k8s-etcd-{digest[:12]}"

    def kubeconfig_for(self, name: str) -> Path:
        return self.state / f"{name}.kubeconfig"

    def log_for(self, name: str) -> Path:
        return self.logs / f"{name}.log"


@dataclass
class State:
    """What `up` recorded, so that `status`, `down` and a later `up` find it."""

    bin_dir: str
    server: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    ready_after_s: float = 0.0

    def save(self, paths: Paths) -> None:
        tmp = paths.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(paths.state_file)

    @classmethod
    def load(cls, paths: Paths) -> State | None:
        try:
            raw: dict[str, Any] = json.loads(paths.state_file.read_text())
            return cls(
                bin_dir=str(raw["bin_dir"]),
                server=str(raw["server"]),
                ports={str(k): int(v) for k, v in raw["ports"].items()},
                pids={str(k): int(v) for k, v in raw.get("pids", {}).items()},
                started_at=float(raw.get("started_at", 0.0)),
                ready_after_s=float(raw.get("ready_after_s", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None


# ------------------------------------------------------------------ binaries
def cache_dir() -> Path:
    """The version-keyed cache dir of the build script (its single source of truth)."""
    override = os.environ.get("SSO_K8S_CACHE_DIR")
    if override:
        return Path(override)
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-cache-dir"],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip())


def find_binaries() -> tuple[Path, Path]:
    """Return (bin dir, kwok dir); raise when `make k8s-binaries` has not run."""
    cache = cache_dir()
    bin_dir, kwok_dir = cache / "bin", cache / "kwok"
    needed = [*COMPONENTS, "kubectl"]
    missing = [n for n in needed if not os.access(bin_dir / n, os.X_OK)]
    missing += [
        str(kwok_dir / f)
        for f in ("stages.yaml", "storageclass.yaml")
        if not (kwok_dir / f).is_file()
    ]
    if missing:
        raise BinariesMissing(
            f"missing in {cache}: {', '.join(missing)}; "
            "build them first with `make k8s-binaries` (bash e2e/build-k8s-binaries.sh)"
        )
    return bin_dir, kwok_dir


# ----------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def pid_is_ours(pid: int, bin_dir: str) -> bool:
    """Guard against a recycled PID: the process must run one of our binaries.

    We start each binary by its absolute path, so that is its argv[0].
    """
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (OSError, UnicodeDecodeError):
        return False
    return argv0.startswith(bin_dir.rstrip("/") + "/")


def start_process(paths: Paths, name: str, argv: Sequence[str]) -> int:
    logf = paths.log_for(name).open("ab")
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=str(paths.state),
            start_new_session=True,
            close_fds=True,
        )
    finally:
        logf.close()
    (paths.pids / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc.pid


def stop_pid(pid: int, name: str, grace_s: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        log(f"{name} (pid {pid}) ignored SIGTERM for {grace_s:.0f} s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # Reap it if it is our own child (it is when `up` failed half-way).
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(paths: Paths, name: str, lines: int = 25) -> str:
    try:
        text = paths.log_for(name).read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


# ----------------------------------------------------------------------- PKI
def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def make_cert(
    pki: Path,
    name: str,
    subject: str,
    *,
    client: bool,
    sans: Iterable[str] = (),
) -> None:
    """An EC P-256 key and a certificate signed by the cluster CA."""
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=pki)
    openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    usage = "clientAuth" if client else "serverAuth"
    ext = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    san_list = list(sans)
    if san_list:
        ext.append("subjectAltName=" + ",".join(san_list))
    (pki / f"{name}.ext").write_text("\n".join(ext) + "\n")
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "365", "-sha256", "-extfile", f"{name}.ext",
        "-out", f"{name}.crt",
        cwd=pki,
    )  # fmt: skip


# Client identities: (file name, subject). The bootstrap RBAC policy of the
# apiserver grants the controller-manager and scheduler users what they need.
CLIENTS = (
    ("admin", "/O=system:masters/CN=kubernetes-admin"),
    ("kube-controller-manager", "/CN=system:kube-controller-manager"),
    ("kube-scheduler", "/CN=system:kube-scheduler"),
    ("kwok", "/O=system:masters/CN=kwok"),
)


def make_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=pki)
    openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=sso-e2e-ca", "-days", "365",
        "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out", "ca.crt",
        cwd=pki,
    )  # fmt: skip
    make_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        client=False,
        sans=(
            "IP:127.0.0.1",
            "DNS:localhost",
            "IP:10.0.0.1",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
        ),
    )
    for name, subject in CLIENTS:
        make_cert(pki, name, subject, client=True)
    # The service-account token signing key pair (RSA, as kubeadm makes it).
    openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
            "-out", "sa.key", cwd=pki)  # fmt: skip
    openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for f in pki.iterdir():
        if f.suffix == ".key":
            f.chmod(0o600)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def write_kubeconfig(target: Path, server: str, pki: Path, user: str, cert: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sso-e2e",
                "cluster": {"server": server, "certificate-authority-data": b64(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki / f"{cert}.crt"),
                    "client-key-data": b64(pki / f"{cert}.key"),
                },
            }
        ],
        "contexts": [{"name": "sso-e2e", "context": {"cluster": "sso-e2e", "user": user}}],
        "current-context": "sso-e2e",
    }
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    target.chmod(0o600)


# ------------------------------------------------------------------- the API
def api_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def api_get(server: str, pki: Path, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """GET as cluster admin; (status, body), status 0 when unreachable."""
    try:
        with urllib.request.urlopen(  # noqa: S310 - https URL we built ourselves
            server + path, context=api_context(pki), timeout=timeout
        ) as resp:
            return int(resp.status), resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except (OSError, ssl.SSLError):
        return 0, ""


def api_exists(server: str, pki: Path, path: str) -> Callable[[], bool]:
    """A check for `wait_for`: does GET `path` answer 200?"""

    def check() -> bool:
        return api_get(server, pki, path)[0] == 200

    return check


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    alive: Callable[[], None] | None = None,
    interval_s: float = 0.2,
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return
        if alive is not None:
            alive()
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def kubectl(
    bin_dir: Path, kubeconfig: Path, *args: str, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}", *args],
        input=input_text,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed:\n{proc.stderr}{proc.stdout}")
    return proc


# --------------------------------------------------------------- manifests
def load_crds(crd_dir: Path) -> list[dict[str, Any]]:
    """Every CustomResourceDefinition in crds/*.yaml|yml (other documents ignored)."""
    crds: list[dict[str, Any]] = []
    if not crd_dir.is_dir():
        return crds
    for f in sorted([*crd_dir.glob("*.yaml"), *crd_dir.glob("*.yml")]):
        for doc in yaml.safe_load_all(f.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                crds.append(doc)
    return crds


def fake_node(name: str) -> dict[str, Any]:
    """A Node that kwok (selected by annotation) keeps Ready; no taints."""
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION: "fake",
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/os": "linux",
                "kubernetes.io/hostname": name,
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
                "type": "kwok",
            },
        },
        "spec": {},
        "status": {
            "allocatable": resources,
            "capacity": resources,
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "containerRuntimeVersion": "kwok",
            },
            "phase": "Running",
        },
    }


def yaml_stream(docs: Iterable[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


# ------------------------------------------------------------------- checks
def health(paths: Paths, state: State | None) -> tuple[bool, list[str]]:
    """(healthy, human-readable lines) of the cluster described by `state`."""
    if state is None:
        return False, ["no cluster state in " + str(paths.state)]
    lines: list[str] = []
    ok = True
    for name in COMPONENTS:
        pid = state.pids.get(name)
        alive = pid is not None and pid_alive(pid) and pid_is_ours(pid, state.bin_dir)
        ok &= alive
        lines.append(
            f"{name:<24} pid {pid if pid is not None else '-':<8} {'up' if alive else 'DOWN'}"
        )
    if paths.pki.is_dir():
        status, body = api_get(state.server, paths.pki, "/readyz")
    else:
        status, body = 0, ""
    ready = status == 200 and body.strip() == "ok"
    ok &= ready
    lines.append(f"{'/readyz':<24} {state.server:<8} {'ok' if ready else f'NOT READY ({status})'}")
    return ok, lines


# ---------------------------------------------------------------------- up
def cmd_up(paths: Paths) -> int:
    state = State.load(paths)
    healthy, _ = health(paths, state)
    if healthy and state is not None:
        log(f"reusing the running cluster at {state.server}")
        print(f"KUBECONFIG={paths.kubeconfig}")
        return 0
    if state is not None or paths.pids.exists():
        log("cleaning up a stale or half-started cluster")
        cmd_down(paths, quiet=True)

    bin_dir, kwok_dir = find_binaries()
    t0 = time.monotonic()
    paths.state.mkdir(parents=True, exist_ok=True)
    if paths.logs.exists():  # keep one previous run's logs for post-mortems
        previous = paths.state / "logs.previous"
        shutil.rmtree(previous, ignore_errors=True)
        paths.logs.rename(previous)
    for d in (paths.logs, paths.pids):
        d.mkdir(parents=True, exist_ok=True)
    make_pki(paths.pki)
    pki = paths.pki

    ports = {
        "etcd-client": free_port(),
        "etcd-peer": free_port(),
        "apiserver": free_port(),
        "kwok": free_port(),
    }
    server = f"https://127.0.0.1:{ports['apiserver']}"
    state = State(bin_dir=str(bin_dir), server=server, ports=ports, started_at=time.time())
    state.save(paths)

    write_kubeconfig(paths.kubeconfig, server, pki, "admin", "admin")
    for name, _ in CLIENTS[1:]:
        write_kubeconfig(paths.kubeconfig_for(name), server, pki, name, name)

    def started(name: str, argv: Sequence[str]) -> None:
        state.pids[name] = start_process(paths, name, argv)
        state.save(paths)

    def still_running(*names: str) -> Callable[[], None]:
        def check() -> None:
            for n in names:
                if not pid_alive(state.pids[n]):
                    raise ClusterError(f"{n} exited; last log lines:\n{log_tail(paths, n)}")

        return check

    try:
        # etcd --------------------------------------------------------------
        remove_etcd_data(paths)
        etcd_client = f"http://127.0.0.1:{ports['etcd-client']}"
        etcd_peer = f"http://127.0.0.1:{ports['etcd-peer']}"
        started(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={paths.etcd_data}",
                f"--listen-client-urls={etcd_client}",
                f"--advertise-client-urls={etcd_client}",
                f"--listen-peer-urls={etcd_peer}",
                f"--initial-advertise-peer-urls={etcd_peer}",
                f"--initial-cluster=default={etcd_peer}",
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )

        # kube-apiserver ----------------------------------------------------
        started(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                f"--etcd-servers={etcd_client}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports['apiserver']}",
                f"--advertise-address={ADVERTISE_ADDRESS}",
                f"--cert-dir={pki}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'ca.crt'}",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={pki / 'sa.pub'}",
                f"--service-account-signing-key-file={pki / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--allow-privileged=true",
                "--enable-admission-plugins=OwnerReferencesPermissionEnforcement",
                "--profiling=false",
                "--event-ttl=15m",
            ],
        )
        wait_for(
            "kube-apiserver /readyz",
            lambda: api_get(server, pki, "/readyz") == (200, "ok"),
            60,
            still_running("etcd", "kube-apiserver"),
        )
        log(f"kube-apiserver ready at {server} after {time.monotonic() - t0:.1f} s")

        # CRDs, StorageClass, Nodes before the controllers -------------------
        crds = load_crds(CRD_DIR)
        if crds:
            kubectl(
                bin_dir,
                paths.kubeconfig,
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=sso-e2e-cluster",
                "-f",
                "-",
                input_text=yaml_stream(crds),
            )
            names = [f"crd/{c['metadata']['name']}" for c in crds]
            kubectl(
                bin_dir,
                paths.kubeconfig,
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                *names,
            )
            log(f"{len(crds)} CRD(s) Established")
        else:
            log(f"no CRDs in {CRD_DIR}")
        storage_class = yaml.safe_load((kwok_dir / "storageclass.yaml").read_text())
        annotations = storage_class.setdefault("metadata", {}).setdefault("annotations", {})
        annotations["storageclass.kubernetes.io/is-default-class"] = "true"
        # A plain create keeps the Nodes' status (capacity, allocatable) as given.
        kubectl(
            bin_dir,
            paths.kubeconfig,
            "create",
            "-f",
            "-",
            input_text=yaml_stream([storage_class, *(fake_node(n) for n in NODE_NAMES)]),
        )

        # controllers ------------------------------------------------------
        started(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={paths.kubeconfig_for('kube-controller-manager')}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*",
            ],
        )
        started(
            "kube-scheduler",
            [
                str(bin_dir / "kube-scheduler"),
                f"--kubeconfig={paths.kubeconfig_for('kube-scheduler')}",
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
            ],
        )
        started(
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--kubeconfig={paths.kubeconfig_for('kwok')}",
                f"--config={kwok_dir / 'stages.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
                f"--cidr={POD_CIDR}",
                f"--node-ip={FAKE_NODE_IP}",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{ports['kwok']}",
            ],
        )
        everyone = still_running(*COMPONENTS)

        def nodes_ready() -> bool:
            status, body = api_get(server, pki, "/api/v1/nodes")
            if status != 200:
                return False
            ready = 0
            for node in json.loads(body).get("items", []):
                conds = node.get("status", {}).get("conditions") or []
                taints = node.get("spec", {}).get("taints") or []
                is_ready = any(
                    c.get("type") == "Ready" and c.get("status") == "True" for c in conds
                )
                ready += int(is_ready and not taints)
            return ready >= len(NODE_NAMES)

        wait_for("the fake Nodes Ready and untainted", nodes_ready, 60, everyone)
        # The serviceaccount and root-ca-cert-publisher controllers run: pods
        # can be admitted (ServiceAccount admission) and get their token volume.
        for what, path in (
            ("ServiceAccount default/default", "serviceaccounts/default"),
            ("ConfigMap default/kube-root-ca.crt", "configmaps/kube-root-ca.crt"),
        ):
            wait_for(
                what, api_exists(server, pki, f"/api/v1/namespaces/default/{path}"), 60, everyone
            )
    except BaseException:
        log("startup failed: stopping what was started (logs kept in " + str(paths.logs) + ")")
        cmd_down(paths, quiet=True)
        raise

    state.ready_after_s = round(time.monotonic() - t0, 1)
    state.save(paths)
    log(f"cluster ready in {state.ready_after_s} s; export KUBECONFIG={paths.kubeconfig}")
    print(f"KUBECONFIG={paths.kubeconfig}")
    return 0


# -------------------------------------------------------------------- down
def stop_all(paths: Paths, state: State | None) -> None:
    pids: dict[str, int] = dict(state.pids) if state else {}
    # Also pick up pid files of a start that died before saving its state.
    if paths.pids.is_dir():
        for f in paths.pids.glob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pids.setdefault(f.stem, int(f.read_text().strip()))
    bin_dir = state.bin_dir if state else None
    order = [n for n in reversed(COMPONENTS) if n in pids] + [
        n for n in pids if n not in COMPONENTS
    ]
    for name in order:
        pid = pids[name]
        if not pid_alive(pid):
            continue
        if bin_dir is not None and not pid_is_ours(pid, bin_dir):
            log(f"pid {pid} recorded for {name} is not ours any more: leaving it alone")
            continue
        stop_pid(pid, name)
    remove_etcd_data(paths)


def remove_etcd_data(paths: Paths) -> None:
    if paths.etcd_data.is_dir() and not paths.etcd_data.is_symlink():
        shutil.rmtree(paths.etcd_data)
    else:
        paths.etcd_data.unlink(missing_ok=True)


def cmd_down(paths: Paths, quiet: bool = False) -> int:
    state = State.load(paths)
    stop_all(paths, state)
    if paths.state.exists():
        # Keep the logs for post-mortems; drop everything else.
        for child in paths.state.iterdir():
            if child.name in ("logs", "logs.previous", paths.lock_file.name):
                continue
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    if not quiet:
        log("cluster stopped")
    return 0


# ------------------------------------------------------------ status / env
def cmd_status(paths: Paths) -> int:
    state = State.load(paths)
    ok, lines = health(paths, state)
    for line in lines:
        print(line)
    if state is not None:
        print(f"{'kubeconfig':<24} {paths.kubeconfig}")
        if state.ready_after_s:
            print(f"{'ready after':<24} {state.ready_after_s} s")
    print("healthy" if ok else "NOT healthy")
    return 0 if ok else 1


def cmd_env(paths: Paths) -> int:
    state = State.load(paths)
    print(f"export KUBECONFIG={paths.kubeconfig}")
    bin_dir = state.bin_dir if state else None
    if bin_dir is None:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            bin_dir = str(cache_dir() / "bin")
    if bin_dir:
        print(f'export PATH="{bin_dir}:$PATH"')
    return 0


@contextlib.contextmanager
def locked(paths: Paths) -> Iterator[None]:
    """One `up`/`down` at a time per state dir (parallel pytest sessions, make)."""
    paths.state.mkdir(parents=True, exist_ok=True)
    with paths.lock_file.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    args = parser.parse_args(argv)
    paths = Paths(STATE_DIR)
    try:
        if args.command == "up":
            with locked(paths):
                try:
                    return cmd_up(paths)
                except BinariesMissing:
                    raise
                except ClusterError as e:
                    # E.g. a free port taken by someone else between picking
                    # it and binding it: one more try from scratch.
                    log(f"error: {e}")
                    log("retrying once")
                    return cmd_up(paths)
        if args.command == "down":
            with locked(paths):
                return cmd_down(paths)
        if args.command == "status":
            return cmd_status(paths)
        return cmd_env(paths)
    except ClusterError as e:
        log(f"error: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
