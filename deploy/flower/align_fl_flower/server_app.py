"""The ServerApp: `align-fl server init`, then per round sends the downlink to every client (in
client-id order), writes the updates that come back to disk and runs `align-fl server round`.
Clients that do not answer in time, or answer with an error, are named to the binary, which leaves
them out if enough remain."""

import subprocess
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from .wire import pack, unpack

app = ServerApp()


def _run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    print(done.stdout, end="", flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed: {done.stderr.strip()}")


def _clients(grid: Grid, wanted: int, timeout: float) -> dict[int, int]:
    """client id → node id, once `wanted` nodes are connected and have said who they are."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = list(grid.get_node_ids())
        if len(nodes) >= wanted or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    if len(nodes) < wanted:
        raise RuntimeError(f"only {len(nodes)} of {wanted} SuperNodes connected within {timeout} s")
    asks = [Message(RecordDict(), dst_node_id=n, message_type="query") for n in nodes]
    ids = {}
    for reply in grid.send_and_receive(asks, timeout=timeout):
        if not reply.has_error():
            ids[int(reply.content["node"]["client-id"])] = reply.metadata.src_node_id
    return dict(sorted(ids.items()))


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    binary = str(cfg["binary"])
    state = Path(str(cfg["state-dir"])).resolve()
    exchange = state / "exchange"
    exchange.mkdir(parents=True, exist_ok=True)
    downlink = exchange / "downlink.bin"
    init = [binary, "server", "init", "--config", str(cfg["experiment"]), "--state", str(state), "--downlink", str(downlink)]
    if str(cfg["data-dir"]):
        init += ["--data-dir", str(cfg["data-dir"])]
    _run(init)
    clients = _clients(grid, int(cfg["clients"]), float(cfg["connect-timeout"]))
    print(f"clients: {sorted(clients)}", flush=True)
    round_ = 0
    while downlink.exists():
        round_ += 1
        body = pack(downlink.read_bytes())
        asks = [
            Message(RecordDict({"downlink": body, "round": ConfigRecord({"round": round_})}), dst_node_id=node, message_type="train")
            for node in clients.values()
        ]
        node_to_client = {node: client for client, node in clients.items()}
        answered: dict[int, Path] = {}
        errors: dict[int, str] = {}
        for reply in grid.send_and_receive(asks, timeout=float(cfg["round-timeout"])):
            client = node_to_client.get(reply.metadata.src_node_id)
            if client is None:
                continue
            if reply.has_error():
                errors[client] = f"error on the client: {reply.error.reason}"
                continue
            path = exchange / f"update-{round_}-client-{client}.bin"
            path.write_bytes(unpack(reply.content["update"]))
            answered[client] = path
        cmd = [binary, "server", "round", "--state", str(state), "--downlink", str(downlink)]
        cmd += [f"--update={k}={p}" for k, p in sorted(answered.items())]
        for k in sorted(clients):
            if k not in answered:
                reason = errors.get(k, f"no answer within {cfg['round-timeout']} s")
                cmd += [f"--no-answer={k}={reason}"]
        if int(cfg["min-clients"]) > 0:
            cmd += ["--min-clients", str(int(cfg["min-clients"]))]
        _run(cmd)
    print(f"report: {state / 'report.json'}", flush=True)
