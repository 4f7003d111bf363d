"""A tiny plain Accelerate loop with `AcceleratorCheckpoints`, run as one process per rank by tests/integrations.

`--signal-at-step` makes one rank send itself a real signal after that optimizer step, or, with
`--in-save`, inside that step's save (`save_state` has gathered the state and written no file yet):
from the loop and Accelerate's own save hook, so the moment is an event of the job, not a guess of
the test's. Every rank prints the checkpoint it resumed from.
"""

from __future__ import annotations

import os
import signal

import torch
from _arguments import job_parser  # beside this script, first on sys.path when it runs
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import set_seed
from torch import nn

import resilient
from resilient.integrations.huggingface import AcceleratorCheckpoints

EPOCHS = 3


def main() -> None:
    parser = job_parser()
    parser.add_argument("--in-save", action="store_true")
    args = parser.parse_args()

    with resilient.Run(checkpoint=[], run_dir=args.run_dir) as run:
        # A seedable sampler shuffles each epoch from (seed, epoch): the resumed epoch's order is the same.
        accelerator = Accelerator(cpu=True, dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
        set_seed(0)
        model = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        generator = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(64, 8, generator=generator),
                                              torch.randn(64, 1, generator=generator))
        # Its own generator: a new iterator (the resumed epoch's) draws its seed from it, not from the
        # global RNG that dropout uses and that load_state restored as it was at the save.
        loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, generator=torch.Generator())
        model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
        checkpoints = AcceleratorCheckpoints(accelerator, run)
        step = checkpoints.resume()

        def signal_at(done: int) -> None:
            if done == args.signal_at_step and run.rank == args.signal_rank:
                os.kill(os.getpid(), getattr(signal, f"SIG{args.signal}"))

        if args.in_save:
            accelerator.register_save_state_pre_hook(lambda models, weights, directory: signal_at(step))
        for epoch in range(step // len(loader), EPOCHS):
            loader.set_epoch(epoch)
            skip = step - epoch * len(loader)
            for x, y in accelerator.skip_first_batches(loader, skip) if skip else loader:
                loss = nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad()
                step += 1
                if not args.in_save:
                    signal_at(step)
                checkpoints.step(step)
                if step % 5 == 0:
                    checkpoints.save(step)
        print(f"rank {run.rank} resumed from {checkpoints.resumed_from}", flush=True)
        if run.rank == 0:
            torch.save(accelerator.unwrap_model(model).state_dict(), args.out)


if __name__ == "__main__":
    main()
