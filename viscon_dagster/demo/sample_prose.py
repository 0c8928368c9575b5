"""Seeded English prose for the bundled sample corpus and the locally trained tokenizer.

Pages are built from topic-specific sentence templates so documents read like the web pages
OBELICS holds (travel notes, recipes, product pages, event reports, nature articles), with
named places, people and products an image caption can pick up from the page context.
"""

from __future__ import annotations

import random

PLACES = ["Lisbon", "Kyoto", "the Scottish Highlands", "Cape Town", "Lake Bled", "Oaxaca",
          "the Amalfi Coast", "Reykjavik", "Hoi An", "Patagonia", "Quebec City", "Marrakech"]
PEOPLE = ["Maria Santos", "Kenji Watanabe", "Aisha Bello", "Tom Fletcher", "Ingrid Olsen",
          "Rahul Mehta", "Chloe Dubois", "Diego Alvarez", "Hannah Kim", "Samuel Okafor"]
PRODUCTS = ["the Aurora X2 headphones", "a cast-iron Dutch oven", "the Trailblazer 40L backpack",
            "a handmade oak bookshelf", "the Nimbus e-bike", "a ceramic pour-over set",
            "the Polaris desk lamp", "a merino wool travel jacket"]
DISHES = ["lemon risotto", "miso-glazed salmon", "a rustic apple galette", "black bean tacos",
          "slow-roasted tomato soup", "cardamom buns", "spinach and feta pie", "coconut curry"]
EVENTS = ["the annual harvest festival", "a community marathon", "the city jazz weekend",
          "a robotics fair for students", "the spring flower show", "a night market opening"]
ANIMALS = ["red foxes", "humpback whales", "snowy owls", "mountain goats", "sea otters",
           "monarch butterflies", "grey herons", "wild horses"]
ADJECTIVES = ["bright", "quiet", "crowded", "colourful", "misty", "sunlit", "narrow", "historic",
              "peaceful", "busy", "windswept", "cozy", "modern", "weathered"]
COLOURS = ["red", "blue", "green", "golden", "white", "orange", "purple", "grey"]

TOPICS: dict[str, list[str]] = {
    "travel": [
        "We arrived in {place} early in the morning, when the {adj} streets were still empty.",
        "Our guide, {person}, has lived in {place} for twenty years and knows every corner of it.",
        "The view from the old harbour in {place} is one of the most {adj} sights of the trip.",
        "If you visit {place} in autumn, bring a warm layer: evenings turn cold quickly.",
        "A short train ride from the centre of {place} brings you to a {adj} village by the water.",
        "The photo below shows the {colour} doors of the market hall, built more than a century ago.",
        "Most travellers spend two days in {place}, but a week lets you see the quieter side of it.",
    ],
    "recipe": [
        "This recipe for {dish} comes from {person}, who cooked it for her family every Sunday.",
        "Start by warming the oil in a heavy pan over medium heat for about two minutes.",
        "The {dish} is ready when the edges turn {colour} and the kitchen smells of butter.",
        "You can prepare the dough a day ahead and keep it covered in the fridge overnight.",
        "Serve the {dish} warm with a simple green salad and a slice of fresh bread.",
        "In the picture you can see the {adj} crust just after it comes out of the oven.",
        "Leftovers keep well for three days in an airtight container.",
    ],
    "product": [
        "We tested {product} for six weeks in everyday use, at home and on the road.",
        "The finish is a matte {colour} that hides scratches and fingerprints well.",
        "At this price, {product} competes with models that cost almost twice as much.",
        "{person}, our reviewer, found the controls {adj} and easy to learn in a single afternoon.",
        "The box contains the main unit, a charging cable and a short printed guide.",
        "Battery life reached about eleven hours in our tests, slightly above the official figure.",
        "The image above shows the compact design next to a standard coffee mug for scale.",
    ],
    "event": [
        "Thousands of visitors came to {event} in {place} this weekend despite the rain.",
        "The organiser, {person}, said this year's edition was the largest since it began.",
        "Stalls along the {adj} main square sold local cheese, honey and {colour} ceramics.",
        "Children gathered around a stage where musicians played until late in the evening.",
        "Volunteers spent three weeks preparing the grounds before {event} opened its gates.",
        "Our photographer captured the {adj} atmosphere as the parade passed the town hall.",
        "Next year the festival will move to a larger park on the edge of {place}.",
    ],
    "nature": [
        "In the early spring, {animal} return to the coast near {place} to feed and rest.",
        "The researcher {person} has counted the local population of {animal} for a decade.",
        "A {adj} morning is the best time to spot wildlife along the northern trail.",
        "The photograph shows a group of {animal} resting on the {colour} rocks by the shore.",
        "Visitors are asked to keep a distance of at least fifty metres from the animals.",
        "Changes in water temperature have shifted the season by almost two weeks.",
        "The reserve is open from dawn to dusk, and entry is free for local residents.",
    ],
}

TITLES = {
    "travel": "A few days in {place}",
    "recipe": "How to make {dish}",
    "product": "Review: {product}",
    "event": "Scenes from {event}",
    "nature": "Watching {animal} near {place}",
}


def page_slots(rng: random.Random) -> dict[str, str]:
    """The named entities one page is about (fixed for the whole page, so it stays on topic)."""
    return {
        "place": rng.choice(PLACES), "person": rng.choice(PEOPLE), "product": rng.choice(PRODUCTS),
        "dish": rng.choice(DISHES), "event": rng.choice(EVENTS), "animal": rng.choice(ANIMALS),
        "adj": rng.choice(ADJECTIVES), "colour": rng.choice(COLOURS),
    }


def paragraph(rng: random.Random, topic: str, slots: dict[str, str], sentences: int) -> str:
    chosen = [rng.choice(TOPICS[topic]) for _ in range(sentences)]
    # adjectives and colours vary per sentence; the entities stay fixed for the page
    text = " ".join(s.format(**{**slots, "adj": rng.choice(ADJECTIVES), "colour": rng.choice(COLOURS)})
                    for s in chosen)
    return text[0].upper() + text[1:]


def title(topic: str, slots: dict[str, str]) -> str:
    t = TITLES[topic].format(**slots)
    return t[0].upper() + t[1:]


def corpus(n_paragraphs: int, seed: int = 0) -> list[str]:
    """Paragraphs over every topic: the training text of the local tokenizer."""
    rng = random.Random(seed)
    out = []
    for i in range(n_paragraphs):
        topic = list(TOPICS)[i % len(TOPICS)]
        out.append(paragraph(rng, topic, page_slots(rng), rng.randint(2, 6)))
    return out
