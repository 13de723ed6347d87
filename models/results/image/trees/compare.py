"""Image chain vs tree drafts on the bundled image pair (time and steps only; one interleaved run)."""
import sys, time, torch
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[4]))
torch.set_num_threads(2)
from modalities.image.generation import ImageModels, generate_tokens
from multispec.methods import DraftModelConfig, DraftTreeConfig, Method, NeighborhoodConfig
m = ImageModels.from_zoo()
methods = {"plain": Method(), "draft": Method(DraftModelConfig()),
           "draft-tree 2x2/6": Method(DraftTreeConfig(branches=2, width=2, max_nodes=6)),
           "draft-tree 3x3/10": Method(DraftTreeConfig(branches=3, width=3, max_nodes=10)),
           "draft-tree 2x2 sampled": Method(DraftTreeConfig(branches=2, width=2, sample_children=True)),
           "draft-tree 3x2 sampled": Method(DraftTreeConfig(branches=3, width=2, sample_children=True)),
           "draft+lantern 0.2": Method(DraftModelConfig(), NeighborhoodConfig(delta=0.2)),
           "tree 2x2/6+lantern 0.2": Method(DraftTreeConfig(branches=2, width=2, max_nodes=6), NeighborhoodConfig(delta=0.2))}
names = list(methods); tot = {n: [0.0, 0, 0, 0.0] for n in names}
classes = m.class_names
i = 0
for rep in range(2):
    for label in classes:
        order = names[i % len(names):] + names[:i % len(names)]; i += 1
        for n in order:
            g = torch.Generator().manual_seed(1000 * rep + classes.index(label))
            s = time.perf_counter()
            out = generate_tokens(m, label, methods[n], generator=g)
            tot[n][0] += time.perf_counter() - s; tot[n][1] += out.tokens.numel(); tot[n][2] += out.stats.steps
            tot[n][3] += out.stats.moved_mass
base = tot["plain"][0]
print(f"{2*len(classes)} images per method, temperature 1, guidance 3")
for n, (s, toks, steps, moved) in tot.items():
    print(f"| {n} | {base/s:.2f}x | {toks/steps:.2f} | {moved/max(toks,1):.4f} |")
