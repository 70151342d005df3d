"""The example specs of LANGUAGE.md, shared by the parser and formatter tests."""

# Sections 3 and 4, with the reference's own spacing and comments.
DECLARATIONS = """\
spec digits                                  # optional; names the namespace
import "common.mdl" as common                # relative path, must stay inside the spec root

labels Digit  = {0..9}                       # integer range
labels Even   = {0, 2, 4, 6, 8} within Digit # a subset, checked
labels Garment = {"tshirt", "trouser", "pullover"}

dim B : batch                                # the batch dimension (one per spec at most)
dim H = 8, W = 8                             # constant dimensions
dim F = H * W                                # derived dimension
dim S                                        # free symbolic dimension, bound per call

type Image     = Tensor[B, 1, H, W] float32 in [0, 1]
type Flat      = Tensor[B, F] float32
type Scores[L] = Tensor[B, L] float32        # generic over a label set

interface Classifier[L] {
  input  x: Image
  output y: Scores[L]
  requires finite(x)
  ensures  finite(y)
}

module cnn : Classifier[Digit] {
  python "examples.digits.models:load_cnn"      # optional binding for the CLI
  ensures calibrated: sum(softmax(y)) == 1 within 1e-5
  ensures robust: forall x2 within 0.02 of x (linf): argmax(self(x2)) == argmax(y)
  ensures accuracy(y) >= 0.93 on digits_test with confidence 0.95
  cost { params <= 50k, flops <= 2M per sample }
}

data digits_test : (Image, Digit) { python "examples.digits.data:test_split" }
"""

# Section 6.
COMPOSITIONS = """\
compose pipeline : Classifier[Digit] = normalize >> cnn
compose voted    : Classifier[Digit] = vote(m0, m1, m2, m3, m4, m5, m6, m7, m8, m9)
compose wider    : Classifier[Digit | Garment] = vote(cnn, garment_net)
compose repaired : Classifier[Digit] = replace(voted, m5, m5_v2) {
  ensures accuracy(y) >= 0.9 on digits_test
}
"""

# Sections 3, 4 and 6 as one file.
LANGUAGE_EXAMPLE = DECLARATIONS + "\n" + COMPOSITIONS
