"""The IR of declarations: label sets in order and their algebra, dims folded or symbolic, tensor types."""

from __future__ import annotations

import pytest

from mdl_lang import ir

LABELS = """
labels Digit = {0..9}
labels Even = {0, 2, 4, 6, 8} within Digit
labels Odd = Digit - Even
labels Mixed = {9, 3} | {1, 3, 5}
labels Garment = {"tshirt", "trouser", "pullover"}
labels Strokes = {"|", "\\\\", "\\""}
labels Concern = {5} | other
labels Signed = {-2..1}
labels Nested = {Even, 9} - {0}
labels Everything = Digit | Garment | other
"""


@pytest.fixture
def label_sets(spec_of) -> dict[str, ir.LabelSet]:
    return spec_of(LABELS).label_sets


def test_integer_range_is_every_integer_in_order(label_sets) -> None:
    assert label_sets["Digit"].labels == tuple(range(10))
    assert label_sets["Signed"].labels == (-2, -1, 0, 1)


def test_a_subset_within_its_parent_keeps_its_own_order(label_sets) -> None:
    assert label_sets["Even"].labels == (0, 2, 4, 6, 8)


def test_difference_keeps_the_left_order(label_sets) -> None:
    assert label_sets["Odd"].labels == (1, 3, 5, 7, 9)


def test_union_appends_the_new_labels_of_the_right(label_sets) -> None:
    assert label_sets["Mixed"].labels == (9, 3, 1, 5)


def test_strings_are_labels_with_their_escapes_undone(label_sets) -> None:
    assert label_sets["Garment"].labels == ("tshirt", "trouser", "pullover")
    assert label_sets["Strokes"].labels == ("|", "\\", '"')


def test_other_is_a_label_of_its_own(label_sets) -> None:
    concern = label_sets["Concern"]
    assert concern.labels == (5, ir.OTHER)
    assert concern.has_other
    assert concern.own_labels == (5,)
    assert concern.position(ir.OTHER) == 1


def test_a_name_inside_a_literal_stands_for_its_labels(label_sets) -> None:
    assert label_sets["Nested"].labels == (2, 4, 6, 8, 9)


def test_unions_of_names_and_other(label_sets) -> None:
    everything = label_sets["Everything"]
    assert everything.labels == (*range(10), "tshirt", "trouser", "pullover", ir.OTHER)
    assert len(everything) == 14


def test_declared_sets_carry_their_names(label_sets) -> None:
    assert all(label_set.name == name for name, label_set in label_sets.items())
    assert label_sets["Digit"].describe() == "Digit = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}"


DIMS = """
dim B : batch
dim H = 8, W = 8
dim F = H * W
dim Half = F // 2
dim Rest = F - Half - 1
dim S
dim Twice = S * 2
"""


def test_constant_dims_are_folded(spec_of) -> None:
    dims = spec_of(DIMS).dims
    assert dims["H"] == dims["W"] == ir.DimConst(8)
    assert dims["F"] == ir.DimConst(64)
    assert dims["Half"] == ir.DimConst(32)
    assert dims["Rest"] == ir.DimConst(31)


def test_free_and_batch_dims_stay_symbolic(spec_of) -> None:
    dims = spec_of(DIMS).dims
    assert dims["B"] == ir.DimVar("B", batch=True)
    assert dims["S"] == ir.DimVar("S")
    assert dims["Twice"] == ir.DimBinary("*", ir.DimVar("S"), ir.DimConst(2))
    assert str(dims["Twice"]) == "S * 2"


def test_dims_may_be_used_before_they_are_declared(spec_of) -> None:
    dims = spec_of("dim F = H * W\ndim H = 4, W = 2\n").dims
    assert dims["F"] == ir.DimConst(8)


TYPES = """
labels Digit = {0..9}
dim B : batch
dim H = 8, W = 8
dim S
type Image = Tensor[B, 1, H, W] float32 in [0, 1]
type KImage = Tensor[B, H, W] float32 in [0, 1/255]
type Flat = Tensor[B, H * W] float64 finite
type Any = Tensor[B, ..., _] float in [-inf, inf]
type Scores[L] = Tensor[B, L] float32 in [0, 1]
type Narrow = Image in [0.25, 2]

interface Types {
  input image: Image
  input kimage: KImage
  input flat: Flat
  input any: Any
  input narrow: Narrow
  input free: Tensor[B, S, S + 1] int64
  output scores: Scores[{5} | other]
  output digits: Scores[Digit]
  output mask: Tensor[B, 3] bool
}
"""


@pytest.fixture
def ports(spec_of) -> dict[str, ir.TensorType]:
    interface = spec_of(TYPES).interfaces["Types"]
    return {port.name: port.type for port in interface.ports}


def test_type_with_dtype_and_range(ports) -> None:
    image = ports["image"]
    assert image.dims == (ir.DimVar("B", batch=True), ir.DimConst(1), ir.DimConst(8), ir.DimConst(8))
    assert (image.dtype, image.value_range, image.finite) == ("float32", (0.0, 1.0), False)
    assert image.has_batch
    assert image.sample_dims == (ir.DimConst(1), ir.DimConst(8), ir.DimConst(8))
    assert image.describe() == "Tensor[B, 1, 8, 8] float32 in [0, 1]"


def test_range_bounds_are_constant_expressions(ports) -> None:
    assert ports["kimage"].value_range == (0.0, 1 / 255)


def test_dims_in_shapes_are_folded_and_finite_is_kept(ports) -> None:
    flat = ports["flat"]
    assert flat.dims[1] == ir.DimConst(64)
    assert (flat.dtype, flat.finite) == ("float64", True)


def test_any_float_ellipsis_and_wildcard(ports) -> None:
    anything = ports["any"]
    assert anything.dims[1:] == (ir.DimEllipsis(), ir.DimAny())
    assert anything.dtype == ir.ANY_FLOAT
    assert anything.value_range == (float("-inf"), float("inf"))


def test_refinement_narrows_the_range_of_a_named_type(ports) -> None:
    assert ports["narrow"].value_range == (0.25, 1.0)
    assert ports["narrow"].dtype == "float32"


def test_free_dims_in_a_shape(ports) -> None:
    free = ports["free"]
    assert free.dims[1:] == (ir.DimVar("S"), ir.DimBinary("+", ir.DimVar("S"), ir.DimConst(1)))
    assert free.dtype == "int64"


def test_generic_type_instantiated_with_a_label_set_expression(ports) -> None:
    scores = ports["scores"]
    assert scores.dims[0] == ir.DimVar("B", batch=True)
    axis = scores.dims[1]
    assert isinstance(axis, ir.DimLabels)
    assert axis.labels.labels == (5, ir.OTHER)
    assert ports["digits"].dims[1] == ir.DimLabels(ir.LabelSet(tuple(range(10))))
    assert ports["mask"].dtype == "bool"


def test_abstract_interface_keeps_generic_parameters_opaque(spec_of) -> None:
    spec = spec_of(TYPES + "interface Generic[L] {\n  input x: Image\n  output y: Scores[L]\n}\n")
    generic = spec.interfaces["Generic"]
    axis = generic.port("y").type.dims[1]
    assert isinstance(axis, ir.DimLabels) and axis.labels.opaque
    assert generic.name == "Generic[L]"
