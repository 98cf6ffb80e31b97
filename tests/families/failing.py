"""A user family for tests: the MLP, except that building a model of depth 2 raises (a broken user model)."""
from memstudy.nn.models.mlp import MLPFamily


class FailsAtDepthTwo(MLPFamily):
    name = "fails-at-depth-two"

    def build(self, config):
        if config["depth"] == 2:
            raise RuntimeError("this family cannot build depth 2")
        return super().build(config)
