"""The ClientApp: writes the server's downlink to disk, runs `align-fl client round`, and sends the
update file back. Each SuperNode's --node-config names its client id, its training images (a
`data-dir` holding the run's dataset, whose configured shard it trains on, or its own `images`: an
IDX file or a folder of 28x28 gray PNGs), its state directory and the binary:

    --node-config 'client-id=0 data-dir="/data" state-dir="/var/lib/align-fl/client-0" binary="align-fl"'
    --node-config 'client-id=0 images="/srv/images" state-dir="/var/lib/align-fl/client-0" binary="align-fl"'
"""

import subprocess
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from .wire import pack, unpack

app = ClientApp()


def _node(context: Context) -> tuple[int, list[str], Path, str]:
    """The client id, the `align-fl client round` arguments naming its training images, its state
    directory and the binary."""
    cfg = context.node_config
    if ("images" in cfg) == ("data-dir" in cfg):
        raise ValueError("the SuperNode's --node-config needs one of data-dir (the run's dataset) and images (own images)")
    images = ["--images", str(cfg["images"])] if "images" in cfg else ["--data-dir", str(cfg["data-dir"])]
    return int(cfg["client-id"]), images, Path(str(cfg["state-dir"])), str(cfg.get("binary", "align-fl"))


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Tells the server which client this node is (client order is fixed by this id)."""
    client, _, _, _ = _node(context)
    return Message(RecordDict({"node": ConfigRecord({"client-id": client})}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round: downlink bytes in, update bytes out, through the align-fl binary."""
    client, images, state_root, binary = _node(context)
    # One state directory per run: a SuperNode serves many runs, and resumes each after a restart.
    state_dir = state_root / f"run-{context.run_id}"
    round_ = int(msg.content["round"]["round"])
    exchange = state_dir / "exchange"
    exchange.mkdir(parents=True, exist_ok=True)
    downlink, update = exchange / f"downlink-{round_}.bin", exchange / f"update-{round_}.bin"
    downlink.write_bytes(unpack(msg.content["downlink"]))
    done = subprocess.run(
        [binary, "client", "round", "--client", str(client), *images,
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
