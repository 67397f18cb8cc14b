"""Block definitions shared by the tests (the contract's example, and the seed scenario)."""

from __future__ import annotations

from typing import Any

CART_REMINDER: dict[str, Any] = {
    "width": 600,
    "height": 200,
    "format": "png",
    "variants": [
        {
            "name": "thanks",
            "when": "events.within('purchase', hours=48)",
            "layers": [
                {"type": "fill", "color": "#0b6e4f"},
                {
                    "type": "text",
                    "box": [24, 24, 552, 152],
                    "text": "Thanks for your order, {{ profile.first_name }}!",
                    "size": 40,
                    "color": "#ffffff",
                },
            ],
            "link": "https://shop.example.com/orders",
        },
        {
            "name": "cart",
            "when": "events.within('cart_abandoned', days=3)",
            "layers": [
                {"type": "fill", "color": "#fff4e5"},
                {
                    "type": "text",
                    "box": [24, 24, 552, 152],
                    "text": "{{ profile.first_name }}, "
                    "{{ events.last('cart_abandoned').props.item }} is waiting",
                    "size": 36,
                    "color": "#7a2e00",
                },
            ],
            "link": "https://shop.example.com/cart",
        },
    ],
    "default": {
        "layers": [
            {"type": "fill", "color": "#222222"},
            {
                "type": "text",
                "box": [24, 24, 552, 152],
                "text": "Our spring collection is here",
                "size": 40,
                "color": "#ffffff",
            },
        ],
        "link": "https://shop.example.com/",
    },
}


def greeting(text: str = "Hello {{ profile.first_name }}") -> dict[str, Any]:
    """A one-variant block whose text depends on the recipient."""
    return {
        "width": 400,
        "height": 100,
        "variants": [
            {
                "name": "named",
                "layers": [
                    {"type": "fill", "color": "#ffffff"},
                    {"type": "text", "box": [10, 10, 380, 80], "text": text, "size": 30},
                ],
                "link": "https://shop.example.com/named",
            }
        ],
        "default": {
            "layers": [
                {"type": "fill", "color": "#ffffff"},
                {"type": "text", "box": [10, 10, 380, 80], "text": "Hello there", "size": 30},
            ],
            "link": "https://shop.example.com/",
        },
    }


def one_variant_block(
    name: str,
    when: str,
    text: str,
    link: str,
    *,
    width: int = 300,
    height: int = 100,
    background: str = "#0b6e4f",
    default_color: str = "#222222",
    **text_style: Any,
) -> dict[str, Any]:
    """A block whose one variant, `name`, shown `when`, draws `text` on `background` and
    links to `link`; anyone else gets the default, a `default_color` fill linking to the
    shop."""
    return {
        "width": width,
        "height": height,
        "format": "png",
        "variants": [
            {
                "name": name,
                "when": when,
                "layers": [
                    {"type": "fill", "color": background},
                    {
                        "type": "text",
                        "box": [4, 4, width - 8, height - 8],
                        "text": text,
                        **text_style,
                    },
                ],
                "link": link,
            }
        ],
        "default": {
            "layers": [{"type": "fill", "color": default_color}],
            "link": "https://shop.example.com/",
        },
    }


# Shows the name of item sku-1 while the inventory has it in stock.
IN_STOCK = one_variant_block(
    "in-stock",
    "inventory['sku-1'].stock > 0",
    "{{ inventory['sku-1'].name }}",
    "https://shop.example.com/sku-1",
)


def slow_greeting(names: int = 2000, side: int = 1200, size: int = 12) -> dict[str, Any]:
    """A greeting that takes long to draw: a `side` x `side` square filled with the
    recipient's name `names` times (by default 8,000 characters of text, under the
    template output cap, so the variant resolves and is drawn)."""
    loop = "{% for i in range(" + str(names) + ") %}"
    block = greeting(loop + "{{ profile.first_name }} {% endfor %}")
    block["width"], block["height"] = side, side
    block["variants"][0]["layers"][1].update(box=[0, 0, side, side], size=size)
    return block
