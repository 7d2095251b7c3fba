"""Held-out English sentences for embedding fidelity, and a plain text-file reader.

`EVAL_SENTENCES` is the built-in `sentences` set: hand-written for sparsa, varied in topic and
length (about 5 to 60 tokens), and used only to *evaluate* compressed text models, never to
train, calibrate or tune them (the `corpus` set serves those).
"""

from __future__ import annotations

from pathlib import Path

from sparsa.errors import SparsaError

EVAL_SENTENCES: list[str] = [
    "The cat slept on the warm windowsill.",
    "Rain is expected tomorrow afternoon.",
    "She closed the laptop and went for a walk along the river before dinner.",
    "Prices for fresh vegetables rose sharply after the late spring frost damaged many farms in the valley.",
    "Can you send me the report by Friday?",
    "The museum reopened after a two-year renovation that restored the original ceiling paintings and added a new wing for modern sculpture.",
    "A dog barked somewhere in the distance.",
    "He forgot his umbrella again.",
    "The committee postponed its decision until more data on water quality could be collected from the northern wells.",
    "Quantum computers use qubits, which can represent zero and one at the same time.",
    "Please turn off the lights when you leave.",
    "My grandmother grew tomatoes, beans and sunflowers in a small garden behind her house.",
    "The train to Lyon departs from platform nine at seven fifteen.",
    "Although the recipe looked simple, getting the bread to rise properly took three attempts and a borrowed thermometer.",
    "Birds migrate south when the days grow short.",
    "The new policy requires all visitors to sign in at the front desk.",
    "Compilers translate source code written by people into instructions a processor can execute.",
    "I think the meeting went better than expected.",
    "Volcanic ash grounded hundreds of flights across northern Europe for almost a week.",
    "The children built a fort out of cardboard boxes and old blankets.",
    "Where did you park the car?",
    "A gentle breeze carried the smell of pine needles through the open tent.",
    "The company reported a small profit despite higher shipping costs.",
    "Doctors recommend at least seven hours of sleep for most adults.",
    "Our flight was delayed because of a mechanical problem with the landing gear.",
    "He played the violin every evening, even when nobody was listening.",
    "The library lends not only books but also tools, board games and sewing machines.",
    "Glaciers in the Alps have lost a large share of their volume over the past century.",
    "Let's meet at the café on the corner.",
    "The software update fixed the battery drain but introduced a new bug in the calendar app.",
    "Mountains glowed orange in the last light of the evening.",
    "Most spiders are harmless to humans and help control insect populations.",
    "She learned to swim when she was already forty years old.",
    "The bridge will be closed to traffic during the night for inspection.",
    "A good map can be more useful than a phone without signal.",
    "In the experiment, plants exposed to blue light grew shorter but produced thicker leaves than those grown under red light.",
    "The orchestra tuned their instruments as the audience found their seats.",
    "Honey never spoils if it is stored in a sealed container.",
    "The negotiations collapsed when neither side would accept the proposed timeline.",
    "Why is the sky blue during the day but red at sunset?",
    "He repaired the old bicycle with parts from three different shops.",
    "Electric buses now make up half of the city's public transport fleet.",
    "The baby laughed at the sound of crinkling paper.",
    "Scientists discovered a new species of frog in the cloud forests of Ecuador.",
    "We ran out of milk, so I had black coffee this morning.",
    "The historian argued that the treaty was less a peace agreement than a pause between wars.",
    "Snow covered the village overnight.",
    "Remember to water the plants while I am away.",
    "A sudden power cut left the whole neighbourhood in darkness for several hours.",
    "The teacher explained fractions using slices of an apple pie.",
    "Online reviews can be helpful, but some of them are written by the sellers themselves.",
    "The lighthouse keeper wrote in his journal every night for thirty years.",
    "Tickets for the concert sold out within minutes.",
    "Rivers carry sediment from the mountains down to the sea, slowly building fertile deltas at their mouths.",
    "She prefers tea without sugar.",
    "The city council approved funding for three new parks and a public swimming pool.",
    "Lightning struck the old oak tree during the storm.",
    "Learning a new language as an adult requires patience, practice and a tolerance for making mistakes in public.",
    "The printer on the second floor is out of toner.",
    "Astronomers measured the distance to the galaxy using a special type of exploding star.",
    "My neighbour plays the drums late at night.",
    "The soup needs a little more salt.",
    "After the flood, volunteers helped clean mud out of homes and shops along the main street.",
    "The robot vacuum got stuck under the sofa again.",
    "Vaccines train the immune system to recognise a pathogen without causing the disease.",
    "They hiked for six hours before reaching the hut near the summit.",
    "A small error in the spreadsheet led to a large mistake in the final budget.",
    "Penguins cannot fly, but they are excellent swimmers.",
    "The judge asked both lawyers to approach the bench.",
    "The farmers' market opens every Saturday at eight.",
    "During the long winter, the family told stories by the fire and played cards until late.",
    "Solar panels work even on cloudy days, although they produce less electricity.",
    "He apologised for the misunderstanding.",
    "The museum guide spoke four languages fluently.",
    "Traffic was unusually light on the highway this morning.",
    "Our team finally solved the puzzle five minutes before the escape room timer ran out.",
    "The old castle stands on a hill overlooking the harbour.",
    "Bees communicate the location of flowers through a dance.",
    "I would like to book a table for two at eight o'clock.",
    "The novel follows three generations of a family who run a small bakery in a fishing town.",
    "Wind turbines turned slowly on the ridge above the town.",
    "The patient was discharged after a short stay in hospital.",
    "Good documentation saves hours of guesswork for the next person who maintains the code.",
    "She painted the kitchen a bright shade of yellow.",
    "The marathon route passes through five neighbourhoods and crosses the river twice.",
    "Is this seat taken?",
    "The coral reef has started to recover since fishing was banned in the area.",
    "He keeps a notebook of words he does not know.",
    "Fog rolled in from the sea and hid the boats in the harbour.",
    "The startup hired twenty engineers in its first year but struggled to find customers.",
    "Chess players often study famous games to learn strategies from past masters.",
    "The kettle clicked off just as the phone rang.",
    "Farmers rotate crops to keep the soil healthy and reduce pests.",
    "The old photographs were stored in a tin box in the attic, protected from light and moisture for decades.",
    "Our cat refuses to eat anything except one brand of food.",
    "A clear explanation is worth more than a clever one.",
    "The storm knocked down power lines and blocked several roads with fallen trees.",
    "Many desert plants store water in their thick stems and leaves.",
    "The choir sang in a small stone church with remarkable acoustics.",
    "Please keep your ticket until the end of the journey.",
    "Researchers are testing whether a shorter working week improves productivity without reducing output.",
    "When the old mill by the river finally closed, the town lost its largest employer, but within a decade the empty buildings had been turned into workshops, a small theatre, a bakery and apartments for young families who could not afford the city.",
    "To reset the router, hold the small button on the back for ten seconds, wait until all the lights blink twice, then reconnect the cable and give it a few minutes before you test the connection again from your laptop.",
    "The expedition spent three weeks crossing the ice sheet, hauling sledges loaded with food, fuel and scientific instruments, and measuring the thickness of the snow every twenty kilometres to understand how the climate had changed.",
    "Although most visitors come for the famous cathedral, the real treasure of the old quarter is the maze of narrow streets behind it, where bookbinders, instrument makers and tiny restaurants have survived for generations.",
    "If the committee approves the proposal next month, construction of the new railway line could begin in the spring, cutting the journey between the two cities from four hours to under ninety minutes and relieving pressure on the motorway.",
]


def read_text_file(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file, stripped, blank lines dropped (one sentence per line)."""
    p = Path(path)
    if not p.is_file():
        raise SparsaError(f"{p} is not a file", hint="give a UTF-8 text file with one sentence per line")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SparsaError(f"{p} is not UTF-8 text ({e.reason})", hint="save it as UTF-8, one sentence per line") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise SparsaError(f"{p} has no text", hint="put one sentence per line")
    return texts
