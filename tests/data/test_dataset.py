"""Dataset items and transforms: boxes move with the image, relations follow surviving boxes."""

import os

import torch
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset

from itersg.data.dataset import VG150Dataset, collate
from itersg.data.transforms import apply, eval_transforms, shortest_edge_size, train_transforms
from itersg.data.vg150 import VG150Index


def _boxes():
    return torch.tensor([[10.0, 20.0, 30.0, 60.0], [50.0, 5.0, 90.0, 45.0]])


def test_flip_moves_boxes_with_the_image():
    image = torch.zeros(3, 80, 100, dtype=torch.uint8)
    image[:, 20:60, 10:30] = 255
    flip = T.Compose([T.RandomHorizontalFlip(1.0), T.SanitizeBoundingBoxes(labels_getter=lambda x: x[1]["labels"])])
    out, boxes, labels, relations = apply(flip, image, _boxes(), torch.tensor([1, 2]), torch.tensor([[0, 1, 3]]))
    assert boxes.tolist() == [[70.0, 20.0, 90.0, 60.0], [10.0, 5.0, 50.0, 45.0]]
    assert out[:, 20:60, 70:90].min() == 255 and out[:, 20:60, 10:30].max() == 0
    assert relations.tolist() == [[0, 1, 3]] and labels.tolist() == [1, 2]


def test_resize_scales_boxes():
    image = torch.zeros(3, 80, 100, dtype=torch.uint8)
    out, boxes, _, _ = apply(eval_transforms(160, 1000), image, _boxes(), torch.tensor([1, 2]),
                             torch.zeros(0, 3, dtype=torch.long))
    assert out.shape[-2:] == (160, 200)
    torch.testing.assert_close(boxes, _boxes() * 2)


def test_resize_rounds_like_detectron2():
    assert shortest_edge_size(600, 800, 800, 1333) == (800, 1067)  # 1066.67 rounds up
    assert shortest_edge_size(500, 375, 800, 1333) == (1067, 800)
    assert shortest_edge_size(100, 1000, 800, 1333) == (133, 1333)  # longest side capped
    image = torch.zeros(3, 600, 800, dtype=torch.uint8)
    out, boxes, _, _ = apply(eval_transforms(800, 1333), image, torch.tensor([[0.0, 0.0, 800.0, 600.0]]),
                             torch.tensor([1]), torch.zeros(0, 3, dtype=torch.long))
    assert out.shape[-2:] == (800, 1067)
    torch.testing.assert_close(boxes, torch.tensor([[0.0, 0.0, 1067.0, 800.0]]))


def test_boxes_are_clipped_and_only_empty_ones_dropped():
    image = torch.zeros(3, 50, 100, dtype=torch.uint8)
    boxes = torch.tensor([[-5.0, 10.0, 20.0, 70.0], [99.5, 0.0, 130.0, 10.0], [120.0, 0.0, 130.0, 10.0]])
    relations = torch.tensor([[0, 1, 2], [1, 2, 3], [2, 0, 4]])
    _, kept, labels, kept_relations = apply(None, image, boxes, torch.tensor([1, 2, 3]), relations)
    # the 0.5 px sliver stays (detectron2 drops only sides <= 1e-5 px); the box outside the image goes
    assert kept.tolist() == [[0.0, 10.0, 20.0, 50.0], [99.5, 0.0, 100.0, 10.0]]
    assert labels.tolist() == [1, 2] and kept_relations.tolist() == [[0, 1, 2]]


def test_crop_drops_emptied_boxes_and_their_relations():
    class CropLeft(T.Transform):
        def transform(self, inpt, params):
            return self._call_kernel(T.functional.crop, inpt, top=0, left=40, height=80, width=60)

    crop = T.Compose([CropLeft(), T.ClampBoundingBoxes(),
                      T.SanitizeBoundingBoxes(labels_getter=lambda x: (x[1]["labels"], x[1]["box_ids"]))])
    image = torch.zeros(3, 80, 100, dtype=torch.uint8)
    relations = torch.tensor([[0, 1, 3], [1, 1, 4]])
    _, boxes, labels, kept = apply(crop, image, _boxes(), torch.tensor([1, 2]), relations)
    assert boxes.tolist() == [[10.0, 5.0, 50.0, 45.0]] and labels.tolist() == [2]
    assert kept.tolist() == [[0, 0, 4]]


def test_train_items_keep_targets_consistent(synth_vg):
    index = VG150Index(synth_vg, "train", num_val_images=10)
    dataset = VG150Dataset(index, train_transforms([64, 80, 96], 160, [70, 90], [48, 80]))
    torch.manual_seed(0)
    for i in range(20):
        image, target = dataset[i]
        height, width = image.shape[-2:]
        assert image.dtype == torch.uint8 and target["size"].tolist() == [height, width]
        boxes = target["boxes"]
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert len(target["labels"]) == len(boxes)
        assert (target["relations"][:, :2] < len(boxes)).all()


def test_dataloader_workers_open_the_h5_lazily(synth_vg):
    index = VG150Index(synth_vg, "test", num_val_images=10)
    assert index._h5 is None
    dataset = VG150Dataset(index, eval_transforms(96, 160))
    loader = DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=collate)
    ids = [t["image_id"] for _, targets in loader for t in targets]
    assert ids == index.image_ids.tolist()
    assert index._h5 is None  # the parent never opened it


class _OwnHandle(Dataset):
    """Reads an image's annotations and reports whether the h5 handle was opened by this process."""

    def __init__(self, index):
        self.index = index

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        labels = self.index.annotations(i)["labels"].tolist()
        return labels, self.index._h5_pid == os.getpid() != self.index_parent_pid

    index_parent_pid = os.getpid()


def test_forked_workers_do_not_reuse_the_parents_h5_handle(synth_vg):
    index = VG150Index(synth_vg, "test", num_val_images=10)
    expected = [index.annotations(i)["labels"].tolist() for i in range(len(index))]  # the parent opens it
    loader = DataLoader(_OwnHandle(index), batch_size=None, num_workers=2)
    items = list(loader)
    assert [labels for labels, _ in items] == expected
    assert all(own for _, own in items)
