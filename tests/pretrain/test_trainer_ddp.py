"""Two gloo processes on CPU train together (DDP): after a few steps both ranks hold identical teacher
weights and centers, and the checkpoint (written by rank 0) holds them too."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from attmask.eval.checkpoint import load_backbone, read_checkpoint_file

from .helpers import tiny


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, data: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "ATTMASK_DATA": data})
    torch.set_num_threads(1)
    import torch.distributed as td

    from attmask.pretrain.trainer import Trainer

    trainer = Trainer(tiny(batch_size_per_gpu=4, pred_shape="attmask_high"), out, progress=False, device="cpu")
    trainer.run()
    # what this rank holds at the end
    state = trainer.final_state
    torch.save({"teacher": state["teacher"], "loss": state["loss"], "student": state["student"]},
               Path(out) / f"rank{rank}.pt")
    td.barrier()
    td.destroy_process_group()


def test_two_gloo_ranks_stay_identical(tmp_path: Path, data_root: Path) -> None:
    world = 2
    mp.start_processes(_worker, args=(world, _free_port(), str(tmp_path), str(data_root)), nprocs=world,
                       join=True, start_method="spawn")
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for part in ("teacher", "loss", "student"):
        assert set(r0[part]) == set(r1[part])
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), (part, k)
    ck = read_checkpoint_file(tmp_path / "checkpoint.pth")
    # 40 images over 2 ranks x 4: 5 iterations per epoch, 2 epochs
    assert ck["attmask"]["world_size"] == 2 and ck["attmask"]["step"] == 10
    for k, v in r0["teacher"].items():
        assert torch.equal(ck["teacher"][k], v)
    for k, v in r0["loss"].items():
        assert torch.equal(ck["ibot_loss"][k], v)
    assert torch.count_nonzero(r0["loss"]["center"]) > 0  # the centers did move
    assert load_backbone(str(tmp_path / "checkpoint.pth")).info.format == "attmask"
