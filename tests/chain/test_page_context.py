import pytest

from viscon_dagster.core.chain.page_context import ELLIPSIS, count_words, render_context

IMG = "http://i/x.jpg"


def test_placeholders_in_reading_order_and_target_marked():
    texts = ["Intro.", None, "Middle text.", None, "End."]
    images = [None, IMG, None, IMG, None]
    ctx = render_context(texts, images, 3, alt_text="A red door")
    assert ctx.text == "Intro.\n\n<image_1>\n\nMiddle text.\n\n<image_2: TARGET>\n\nEnd."
    assert ctx.target_index == 2 and ctx.alt_text == "A red door" and not ctx.trimmed


def test_image_first_and_image_last():
    first = render_context([None, "After."], [IMG, None], 0)
    assert first.text == "<image_1: TARGET>\n\nAfter."
    last = render_context(["Before.", None], [None, IMG], 1)
    assert last.text == "Before.\n\n<image_1: TARGET>"


def test_no_alt_text_is_none_not_empty():
    assert render_context(["x", None], [None, IMG], 1, alt_text="").alt_text is None


def test_adjacent_images_keep_their_own_numbers():
    ctx = render_context(["T", None, None, None, "U"], [None, IMG, IMG, IMG, None], 2)
    assert "<image_1>\n\n<image_2: TARGET>\n\n<image_3>" in ctx.text


def test_budget_keeps_the_nearest_text_and_marks_cuts():
    far, near_before, near_after = "far away words " * 20, "just before the image", "right after the image"
    texts = [far, near_before, None, near_after, far]
    images = [None, None, IMG, None, None]
    ctx = render_context(texts, images, 2, budget=8)
    assert "just before the image" in ctx.text and "right after the image" in ctx.text
    assert "far away" not in ctx.text and ctx.trimmed
    assert ctx.text.startswith(ELLIPSIS) and ctx.text.endswith(ELLIPSIS)
    assert ctx.tokens <= 8


def test_budget_smaller_than_one_paragraph_keeps_the_words_bordering_the_image():
    before = " ".join(f"b{i}" for i in range(50))
    after = " ".join(f"a{i}" for i in range(50))
    ctx = render_context([before, None, after], [None, IMG, None], 1, budget=5)
    # the tail of the text before the image: the words nearest to it
    assert ctx.text.startswith(f"{ELLIPSIS} b45 b46 b47 b48 b49")
    assert "a0" not in ctx.text  # nothing after: the budget went to the nearer paragraph
    assert ctx.tokens == 5


def test_deterministic_and_uses_the_given_counter():
    texts, images = ["one two three", None, "four five"], [None, IMG, None]
    chars = lambda s: len(s)  # noqa: E731
    a = render_context(texts, images, 1, budget=9, count=chars)
    assert a == render_context(texts, images, 1, budget=9, count=chars)
    assert a.tokens <= 9 and count_words(a.text) < 8


def test_target_must_be_an_image():
    with pytest.raises(ValueError):
        render_context(["a"], [None], 0)
