"""The nearest-class-mean protocol (eval/protocols/ncm.py): known answers. Running in evaluate_backbone, the
config section eval.ncm, results.json, compare and the report are covered by tests/test_protocol_registry.py."""
import torch

from selfsup.eval.protocol import ProtocolSettings, score_features
from selfsup.eval.protocols import PROTOCOLS
from selfsup.eval.protocols.ncm import class_means


def test_class_means_are_the_directions_of_the_normalised_features():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [-3.0, 0.0]])
    classes, means = class_means(torch.nn.functional.normalize(features, dim=1), torch.tensor([5, 5, 2, 2]))
    assert classes.tolist() == [2, 5]
    assert torch.allclose(means, torch.tensor([[-1.0, 0.0], [2 ** -0.5, 2 ** -0.5]]))


def test_ncm_known_answers():
    # Class 0 along +x, class 1 along +y; a far-away training point only counts by its direction.
    train = torch.tensor([[1.0, 0.1], [10.0, -1.0], [0.1, 1.0], [0.0, 5.0]])
    train_labels = torch.tensor([0, 0, 1, 1])
    test = torch.tensor([[3.0, 0.5], [0.2, 2.0], [1.0, 1.2], [1.0, -0.5]])
    test_labels = torch.tensor([0, 1, 1, 1])  # the last one is nearer the class-0 direction: one error
    scores = score_features(train, train_labels, test, test_labels, settings=ProtocolSettings(protocols=("ncm",)))
    assert scores == {"ncm_top1": 0.75}
    # Classes that only differ once the shared offset is removed: centring (CL2N) separates them.
    offset = torch.tensor([100.0, 100.0])
    shifted = dict(train=train + offset, train_labels=train_labels, test=test[:3] + offset, test_labels=test_labels[:3])
    centred = ProtocolSettings(protocols=("ncm",), options={"ncm": {"center": True}})
    assert score_features(**shifted, settings=centred) == {"ncm_top1": 1.0}
    assert PROTOCOLS["ncm"].record(centred.of("ncm"), 0)["center"] is True
