"""`mdl fmt` on concrete text: the canonical layout, parentheses, and where comments go."""

from __future__ import annotations

import textwrap

import pytest

from mdl_lang.syntax.format import format_text
from mdl_lang.syntax.parser import parse
from tests.syntax.examples import LANGUAGE_EXAMPLE


def formatted(text: str) -> str:
    """The canonical text of `text`, which must parse; also checked to format to itself."""
    result = format_text(textwrap.dedent(text), "test.mdl")
    assert result.text is not None, result.diagnostics
    assert format_text(result.text, "test.mdl").text == result.text
    return result.text


def formatted_clause(source: str) -> str:
    """How the expression of `ensures SOURCE` is printed."""
    line = formatted(f"interface I {{ ensures {source} }}").splitlines()[1]
    return line.removeprefix("  ensures ")


def same_tree(text: str, other: str) -> bool:
    return parse(text).tree == parse(other).tree


# ---------------------------------------------------------------- layout


def test_a_messy_file_gets_the_canonical_layout():
    messy = """\
        spec   demo
        import "common.mdl"   as common
        labels Digit={0 .. 9}
        labels Even = { 0,2,4 } within Digit
        dim B:batch
        dim H=8,W  =  8
        type Image=Tensor[ B,1,H,W, ] float32 in [ 0,1 ]
        interface Classifier [L] { input x :Image output y: Tensor[B,L] requires finite( x ) ensures
            sum(y)==1 within 1e-5 }
        module cnn:Classifier[ Digit ]{python "m:load"  ensures accuracy( y )>=0.9 on test with confidence 0.95
          cost{params<=50k,flops<=2M per sample,latency<5 ms at batch 32,}}
        module other_cnn : Classifier[Digit] {}
        data test:(Image,Digit){python "d:test"}
        compose voted:Classifier[Digit]=vote(cnn,other_cnn,overlap=max){ensures accuracy(y)>=0.9 on test}
        compose piped : Classifier[Digit] = a>>b>>(c>>d)
        """
    assert formatted(messy) == textwrap.dedent("""\
        spec demo

        import "common.mdl" as common

        labels Digit = {0..9}
        labels Even = {0, 2, 4} within Digit

        dim B : batch
        dim H = 8, W = 8

        type Image = Tensor[B, 1, H, W] float32 in [0, 1]

        interface Classifier[L] {
          input x: Image
          output y: Tensor[B, L]
          requires finite(x)
          ensures sum(y) == 1 within 1e-5
        }

        module cnn : Classifier[Digit] {
          python "m:load"
          ensures accuracy(y) >= 0.9 on test with confidence 0.95
          cost { params <= 50k, flops <= 2M per sample, latency < 5 ms at batch 32 }
        }

        module other_cnn : Classifier[Digit]

        data test : (Image, Digit) { python "d:test" }

        compose voted : Classifier[Digit] = vote(cnn, other_cnn, overlap=max) {
          ensures accuracy(y) >= 0.9 on test
        }

        compose piped : Classifier[Digit] = a >> b >> (c >> d)
        """)


def test_one_line_declarations_of_one_kind_stay_together_and_kinds_are_set_apart():
    text = "dim B : batch\ndim H = 8\ntype T = Tensor[B]\ntype U = Tensor[H]\nmodule a : I\nmodule b : I\n"
    assert formatted(text) == (
        "dim B : batch\ndim H = 8\n\ntype T = Tensor[B]\ntype U = Tensor[H]\n\nmodule a : I\nmodule b : I\n"
    )


def test_an_empty_interface_keeps_its_braces_and_an_empty_cost_block_too():
    assert formatted("interface I { }\nmodule m : I { cost { } }") == "interface I {}\n\nmodule m : I {\n  cost {}\n}\n"


def test_one_blank_line_between_members_is_kept_but_none_after_the_brace_or_before_the_closing_one():
    text = """\
        module m : I {

          python "x"



          ensures a
          ensures b

        }
        """
    assert formatted(text) == 'module m : I {\n  python "x"\n\n  ensures a\n  ensures b\n}\n'


def test_an_empty_file_formats_to_nothing():
    assert formatted("\n\n") == ""


def test_numbers_are_kept_as_written_and_strings_are_escaped_again():
    text = 'labels L = {1E+2, .5, 10k, 0.50, "a\\"b\\\\c"}\nimport "q\\"uote" as q\n'
    assert formatted(text) == 'labels L = {1E+2, .5, 10k, 0.50, "a\\"b\\\\c"}\n\nimport "q\\"uote" as q\n'


def test_refinements_keep_their_order():
    assert formatted("type T = Tensor[B] in [0,1] finite float32") == "type T = Tensor[B] in [0, 1] finite float32\n"


# ---------------------------------------------------------------- parentheses


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("(a or b) and c", "(a or b) and c"),
        ("a or (b and c)", "a or b and c"),
        ("-(2 ** 2)", "-2 ** 2"),
        ("(-2) ** 2", "(-2) ** 2"),
        ("2 ** (3 ** 2)", "2 ** 3 ** 2"),
        ("(2 ** 3) ** 2", "(2 ** 3) ** 2"),
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a / (b * c)", "a / (b * c)"),
        ("(a + b) * -c", "(a + b) * -c"),
        ("(forall l in L: p) and q", "(forall l in L: p) and q"),
        ("q and (forall l in L: p)", "q and (forall l in L: p)"),
        ("q implies (forall l in L: p)", "q implies forall l in L: p"),
        ("a implies (b implies c)", "a implies b implies c"),
        ("(a implies b) implies c", "(a implies b) implies c"),
        ("not (a and b)", "not (a and b)"),
        ("not (a == b)", "not a == b"),
        ("(a < b) == c", "(a < b) == c"),
        ("(a == b within t) in L", "(a == b within t) in L"),
        ("(a | b) - c", "(a | b) - c"),
        ("a | (b - c)", "a | b - c"),
        ("(f)(x)[0]", "f(x)[0]"),
        ("(a + b)(x)", "(a + b)(x)"),
        ("(-x)[0]", "(-x)[0]"),
        ("{(a == b), (c | d), (e)..(f + g), (h | i)..j}", "{(a == b), c | d, e..f + g, (h | i)..j}"),
        ("forall x2 within (a == b) of x: (p)", "forall x2 within (a == b) of x: p"),
    ],
)
def test_parentheses_appear_exactly_where_precedence_needs_them(source, expected):
    printed = formatted_clause(source)
    assert printed == expected
    assert same_tree(f"labels X = {source}", f"labels X = {printed}")


def test_a_comparison_before_within_of_a_labels_declaration_keeps_its_parentheses():
    text = "labels X = (a == b) within P\nlabels Y = a | b within P\nlabels Z = a == b within P\n"
    assert formatted(text) == "labels X = (a == b) within P\nlabels Y = a | b within P\nlabels Z = a == b within P\n"
    assert parse(text).tree.decls[2].parent is None


def test_a_pipe_on_the_right_of_a_pipe_keeps_its_parentheses():
    assert formatted("compose c : I = (a >> b) >> (c >> d)") == "compose c : I = a >> b >> (c >> d)\n"


# ---------------------------------------------------------------- comments


def test_a_comment_on_its_own_line_stays_before_what_follows_it():
    text = """\
        # the file
        spec s
        # the batch
        dim B : batch
        module m : I {
            # the binding
          python "x"
        }
        """
    assert formatted(text) == textwrap.dedent("""\
        # the file
        spec s

        # the batch
        dim B : batch

        module m : I {
          # the binding
          python "x"
        }
        """)


def test_a_trailing_comment_stays_at_the_end_of_its_line():
    text = """\
        dim B : batch     # the batch
        interface I {  # an interface
          input x: T# the input
          ensures a ==
            b  # a long clause
        }  # end of I
        """
    assert formatted(text) == textwrap.dedent("""\
        dim B : batch  # the batch

        interface I {  # an interface
          input x: T  # the input
          ensures a == b  # a long clause
        }  # end of I
        """)


def test_comments_after_the_last_member_stay_inside_the_block():
    text = "module m : I {\n  ensures a\n# later\n    # more\n}\ndim B : batch\n"
    assert formatted(text) == "module m : I {\n  ensures a\n  # later\n  # more\n}\n\ndim B : batch\n"


def test_comments_at_the_end_of_the_file_stay_there_after_a_blank_line_if_they_had_one():
    assert formatted("dim B : batch\n\n\n# the end\n#\n") == "dim B : batch\n\n# the end\n#\n"
    assert formatted("dim B : batch\n# the end\n") == "dim B : batch\n# the end\n"


def test_a_file_of_comments_only_keeps_them():
    assert formatted("# one\n\n  # two\n") == "# one\n\n# two\n"


def test_a_blank_line_after_a_comment_is_kept():
    text = "# header\n\n\nspec s\n\n# a section\n\n# about B\ndim B : batch\n"
    assert formatted(text) == "# header\n\nspec s\n\n# a section\n\n# about B\ndim B : batch\n"


def test_two_trailing_comments_of_one_line_keep_their_order():
    text = "interface I {\n  ensures a and  # first\n    b  # second\n  ensures c\n}\n"
    assert formatted(text) == "interface I {\n  ensures a and b  # first\n  # second\n  ensures c\n}\n"


def test_comments_inside_one_line_constructs_keep_their_order():
    text = """\
        data d : (T, L) {
          # the split
          python "d:test"  # test half
        }
        module m : I {
          cost {
            params <= 1k,  # small
            flops <= 2k
          }
        }
        """
    assert formatted(text) == textwrap.dedent("""\
        data d : (T, L) { python "d:test" }  # the split

        # test half
        module m : I {
          cost { params <= 1k, flops <= 2k }  # small
        }
        """)


def test_a_hash_in_a_string_is_no_comment():
    assert formatted('module m : I { python "a#b" }  # c') == 'module m : I {\n  python "a#b"\n}  # c\n'


def test_every_comment_survives_with_its_text_and_order():
    text = "# a\nspec s # b\n# c\ninterface I { # d\n # e\n input x: T # f\n # g\n} # h\n# i\n"
    result = format_text(text, "test.mdl").text
    assert [c.text for c in parse(result).tree.comments] == [f"# {letter}" for letter in "abcdefghi"]


# ---------------------------------------------------------------- whole files and errors


def test_the_example_of_language_md_formats_and_parses_back():
    result = formatted(LANGUAGE_EXAMPLE)
    assert parse(result).tree == parse(LANGUAGE_EXAMPLE).tree
    assert result.splitlines()[:5] == [
        "spec digits  # optional; names the namespace",
        "",
        'import "common.mdl" as common  # relative path, must stay inside the spec root',
        "",
        "labels Digit = {0..9}  # integer range",
    ]
    assert "  ensures robust: forall x2 within 0.02 of x (linf): argmax(self(x2)) == argmax(y)" in result
    assert "  cost { params <= 50k, flops <= 2M per sample }" in result


def test_text_that_does_not_parse_is_returned_as_diagnostics():
    result = format_text("dim B : batch\ntype T = Tensor[B\n", "bad.mdl")
    assert result.text is None
    assert [d.code for d in result.diagnostics] == ["E0002"]


def test_a_string_with_an_unknown_escape_is_not_rewritten():
    result = format_text('module m : I { python "a\\qb" }\n', "bad.mdl")
    assert result.text is None
    assert [d.code for d in result.diagnostics] == ["E0004"]


def test_long_clauses_and_votes_wrap_at_one_hundred_characters():
    parts = ", ".join(f"module_number_{k}" for k in range(10))
    text = (
        "interface I { input x: T output y: T\n"
        "  ensures a_rather_long_clause_name: forall l in SomeLabels: l in OtherLabels and y[l] > 0.5 "
        "implies argmax(y) in OtherLabels }\n"
        f"compose voted : I = vote({parts}) {{ ensures y[0] >= 0 }}\n"
    )
    formatted = format_text(text, "wide.mdl").text
    assert formatted is not None
    assert all(len(line) <= 100 for line in formatted.splitlines())
    assert "  ensures a_rather_long_clause_name:\n    forall l in SomeLabels:" in formatted
    assert "compose voted : I = vote(\n  module_number_0, module_number_1," in formatted
    assert "\n) {\n" in formatted
    assert format_text(formatted, "wide.mdl").text == formatted
    assert parse(formatted, "wide.mdl").tree == parse(text, "wide.mdl").tree
