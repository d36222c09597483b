"""songweave: training, inference and evaluation of the creative-agent arranger.

Two songs in, one arrangement of both out: each song is encoded into codec latents, a mask
generator (the learned creative agent, or a fixed rule) decides which song leads in each band and
moment, and a cascade transformer combines the masked songs. The card's modules at the root of
the repository (`creative_agent`, `model_simple_transformer`, `train_simple_worker`,
`train_simple_ddp`) define the agent, the model, the training worker and the launcher; this
package holds everything around them, one folder per concern (see docs/design.md for the map and
which folder may import which).
"""
