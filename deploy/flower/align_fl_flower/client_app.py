"""The ClientApp: writes the server's downlink to disk, runs `align-fl client round`, and sends the
update file back. Each SuperNode's --node-config names its client id, data and state directories
and the binary:

    --node-config 'client-id=0 data-dir="/data" state-dir="/var/lib/align-fl/client-0" binary="align-fl"'
"""

import subprocess
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from .wire import pack, unpack

app = ClientApp()


def _node(context: Context) -> tuple[int, Path, Path, str]:
    cfg = context.node_config
    return int(cfg["client-id"]), Path(str(cfg["data-dir"])), Path(str(cfg["state-dir"])), str(cfg.get("binary", "align-fl"))


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Tells the server which client this node is (client order is fixed by this id)."""
    client, _, _, _ = _node(context)
    return Message(RecordDict({"node": ConfigRecord({"client-id": client})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: downlink bytes in, update bytes out, through the align-fl binary."""
    client, data_dir, state_root, binary = _node(context)
    # One state directory per run: a SuperNode serves many runs, and resumes each after a restart.
    state_dir = state_root / f"run-{context.run_id}"
    round_ = int(msg.content["round"]["round"])
    exchange = state_dir / "exchange"
    exchange.mkdir(parents=True, exist_ok=True)
    downlink, update = exchange / f"downlink-{round_}.bin", exchange / f"update-{round_}.bin"
    downlink.write_bytes(unpack(msg.content["downlink"]))
    done = subprocess.run(
        [binary, "client", "round", "--client", str(client), "--data-dir", str(data_dir),
         "--state", str(state_dir), "--downlink", str(downlink), "--update", str(update)],
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        # The server names this client and the error in the round's report.
        raise RuntimeError(f"align-fl client round failed: {done.stderr.strip()[-2000:]}")
    return Message(
        RecordDict({"update": pack(update.read_bytes()), "node": ConfigRecord({"client-id": client})}),
        reply_to=msg,
    )
