"""Live preferences in a plain PyTorch loop: python examples/torch_example.py [--manual | --fast]

Edit learning_rate or early_stopping_patience in ./mlprefs.toml while it runs: the optimizer
takes the new LR at the next step (the cosine schedule is rescaled, not reset), and early
stopping reads its parameters at every epoch end. --manual paces it at one epoch a second.
"""

import torch
from _example import client, options, prefs_file


def main() -> None:
    args = options(__doc__)
    prefs_file(args, learning_rate=0.05)
    torch.manual_seed(0)
    n = 256 if args.fast else 1024
    X = torch.randn(n, 8)
    y = X @ torch.linspace(-1, 1, 8)[:, None] + 0.1 * torch.randn(n, 1)
    train, val = torch.utils.data.random_split(torch.utils.data.TensorDataset(X, y), [0.75, 0.25])
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},       # gets regularization_l2
                             {"params": no_decay, "weight_decay": 0.0}])    # stays at 0
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=200)
    with client(args) as prefs:
        hooks = prefs.training_hooks(optimizer=opt, scheduler=sched, model=model)
        hooks.on_train_start()                       # the preferred LR is in opt from here on
        try:
            for epoch in range(10_000):
                model.train()
                for step, (xb, yb) in enumerate(loader):
                    opt.zero_grad()
                    torch.nn.functional.mse_loss(model(xb), yb).backward()
                    opt.step()
                    hooks.on_step_end(step)          # pending edits land here, between steps
                sched.step()
                model.eval()
                with torch.no_grad():
                    xv, yv = val[:]
                    val_loss = torch.nn.functional.mse_loss(model(xv), yv).item()
                hooks.on_epoch_end(epoch, {"val_loss": val_loss})   # prints the epoch's line
                if hooks.should_stop:
                    break
        except KeyboardInterrupt:
            hooks.request_stop("interrupted")
        hooks.on_train_end()                         # restores the best weights if asked


if __name__ == "__main__":
    main()
