"""A synthetic expense corpus for the account-suggestion exercise.

Expense texts as bookkeepers see them ("taxi to conference", "Uber airport transfer",
"printer toner HP 305", "Slack annual plan"), each labelled with the ledger account it is booked
to. The notebook, the demo, the tests and the benchmarks all train on it, so it is deterministic:
the same ``n`` and ``seed`` give the same texts and labels on every machine and python version
(it uses only ``random.Random`` with a fixed seed and plain string formatting).

Limits: the corpus is made up. Vendors, amounts and typos vary enough that a TF-IDF + naive
Bayes pipeline has to generalise a little, but the accounts are far better separated than in a
real ledger; accuracy on it says nothing about accuracy on real bookings.

This module depends only on the standard library and scikit-learn (for ``train``); it is a
plain helper next to the notebook, so a bundle pickles it by value.
"""
from __future__ import annotations

import random
from typing import Callable

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import Pipeline

__all__ = ["ACCOUNTS", "TEMPLATES", "make_corpus", "train"]

TRAVEL = "2770 Travel expenses"
OFFICE = "6300 Office supplies"
SOFTWARE = "6540 Software subscriptions"

#: Ledger accounts, "<number> <name>", as a chart of accounts lists them.
ACCOUNTS: tuple[str, ...] = (
    TRAVEL,
    "2780 Accommodation",
    "4200 Rent",
    "4240 Utilities",
    "4360 Insurance",
    "4530 Vehicle fuel",
    "4580 Parking and tolls",
    "4610 Advertising",
    "4650 Meals and entertainment",
    "4805 Repairs and maintenance",
    "4900 Bank fees",
    OFFICE,
    "6310 Postage and shipping",
    "6330 Books and periodicals",
    "6420 Membership fees",
    SOFTWARE,
    "6545 Computer hardware",
    "6805 Telephone and internet",
    "6821 Training and education",
    "6825 Legal and consulting fees",
    "6827 Accounting and audit fees",
    "6850 Cleaning",
)

# Slot vocabularies shared by several accounts' templates.
_CITIES = ["Berlin", "Munich", "Hamburg", "Cologne", "Frankfurt", "Vienna", "Zurich", "Paris",
           "Amsterdam", "London", "Milan", "Prague", "Lyon", "Leipzig", "Stuttgart"]
_MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
           "January", "March", "June", "September", "December", "Q1", "Q2", "Q3", "Q4"]
_SLOTS: dict[str, list[str]] = {
    "city": _CITIES,
    "month": _MONTHS,
    "ride": ["taxi", "Taxi", "cab", "Uber", "Bolt", "FreeNow", "Lyft", "taxi ride", "uber ride"],
    "dest": ["conference", "the conference", "airport", "the airport", "hotel", "train station",
             "client meeting", "customer site", "trade fair", "office", "station", "venue"],
    "rail": ["train ticket", "DB ticket", "Deutsche Bahn", "ICE ticket", "SBB ticket", "Eurostar",
             "rail pass", "BahnCard", "train"],
    "airline": ["Lufthansa", "easyJet", "Ryanair", "Eurowings", "KLM", "Air France", "Swiss",
                "British Airways", "Austrian"],
    "hotel": ["Marriott", "Hilton", "Ibis", "Motel One", "NH Hotels", "Novotel", "Holiday Inn",
              "Airbnb", "Premier Inn", "Radisson", "hotel"],
    "office_item": ["printer toner", "toner cartridge", "copy paper", "A4 paper", "staples",
                    "ballpoint pens", "sticky notes", "envelopes", "folders", "binders",
                    "highlighters", "notebooks", "whiteboard markers", "desk organizer",
                    "label tape", "printer ink", "paper clips", "scissors", "stapler"],
    "office_vendor": ["Staples", "Viking", "Office Depot", "Amazon", "Lyreco", "McPaper",
                      "Otto Office", "Bueromarkt"],
    "toner_model": ["HP 305", "HP 62XL", "Brother TN-2420", "Canon 545", "Epson 603",
                    "HP 912", "Kyocera TK-1150", "Samsung MLT-D111S"],
    "saas": ["Slack", "Zoom", "Notion", "GitHub", "Atlassian Jira", "Confluence", "Figma",
             "Dropbox", "Microsoft 365", "Google Workspace", "Adobe Creative Cloud", "1Password",
             "JetBrains", "Miro", "Salesforce", "HubSpot", "Asana", "Trello", "Canva", "DocuSign"],
    "plan": ["annual plan", "monthly plan", "subscription", "licence renewal", "license",
             "pro plan", "business plan", "seats", "yearly subscription", "team plan"],
    "hardware": ["laptop", "monitor", "docking station", "keyboard", "mouse", "webcam",
                 "headset", "SSD", "external hard drive", "MacBook Pro", "ThinkPad", "iPad",
                 "USB-C hub", "graphics card", "server rack"],
    "hw_vendor": ["Dell", "Lenovo", "Apple", "Logitech", "Samsung", "LG", "Cyberport",
                  "Mediamarkt", "Alternate", "Notebooksbilliger"],
    "restaurant": ["Vapiano", "L'Osteria", "Starbucks", "Pizzeria Roma", "Sushi Bar",
                   "steakhouse", "restaurant", "bistro", "cafe", "Block House"],
    "meal": ["team lunch", "client dinner", "business lunch", "dinner with customer",
             "lunch meeting", "coffee with client", "team dinner", "breakfast meeting"],
    "fuel": ["Shell", "Aral", "Esso", "Total", "BP", "Jet", "OMV", "Agip"],
    "fuel_kind": ["diesel", "petrol", "fuel", "gasoline", "super E10", "refuel"],
    "carrier": ["DHL", "UPS", "FedEx", "Hermes", "DPD", "GLS", "Deutsche Post", "TNT"],
    "parcel": ["parcel", "package", "shipping", "express delivery", "courier", "postage stamps",
               "registered letter", "return label"],
    "telco": ["Telekom", "Vodafone", "O2", "1&1", "Swisscom", "Orange", "Telefonica"],
    "tel_item": ["mobile phone bill", "internet", "fibre broadband", "DSL line", "SIM card",
                 "landline", "data plan", "roaming charges"],
    "ad": ["Google Ads", "Facebook ads", "LinkedIn campaign", "Instagram promotion",
           "newspaper ad", "flyers", "banner printing", "trade fair booth", "Bing Ads",
           "sponsored post"],
    "insurer": ["Allianz", "AXA", "Zurich Insurance", "Generali", "HDI", "ERGO"],
    "insurance": ["liability insurance", "office contents insurance", "cyber insurance",
                  "insurance premium", "business insurance", "D&O policy"],
    "utility": ["electricity", "water bill", "heating", "gas bill", "power bill",
                "district heating"],
    "utility_co": ["Vattenfall", "E.ON", "EnBW", "Stadtwerke", "RWE", "Naturstrom"],
    "repair": ["plumber", "electrician", "repair of", "maintenance", "servicing",
               "fix broken", "replacement part for"],
    "repair_thing": ["coffee machine", "air conditioning", "printer", "door lock", "elevator",
                     "heating system", "window", "company car"],
    "course": ["online course", "Udemy course", "workshop", "seminar", "training",
               "certification exam", "Coursera", "language class", "webinar", "bootcamp"],
    "topic": ["Python", "Excel", "project management", "leadership", "sales", "AWS",
              "first aid", "German", "data analysis", "Scrum"],
    "lawyer": ["law firm", "lawyer", "attorney", "notary", "legal advice", "management consultant",
               "trademark registration", "contract review"],
    "accountant": ["tax advisor", "accountant", "annual audit", "bookkeeping service",
                   "payroll service", "tax return preparation", "auditor"],
    "bank": ["Sparkasse", "Deutsche Bank", "Commerzbank", "N26", "ING", "Volksbank", "PayPal",
             "Stripe", "Wise"],
    "bank_fee": ["account fee", "transaction fee", "wire transfer fee", "card fee",
                 "overdraft interest", "monthly account charge", "FX fee"],
    "book": ["book", "ebook", "magazine subscription", "newspaper", "journal", "textbook",
             "trade magazine"],
    "publisher": ["Amazon Kindle", "O'Reilly", "Handelsblatt", "The Economist", "FAZ",
                  "Harvard Business Review", "Wiley", "Thalia"],
    "association": ["chamber of commerce", "IHK", "trade association", "Bitkom", "IEEE",
                    "professional association", "ACM", "coworking membership"],
    "cleaning": ["office cleaning", "window cleaning", "cleaning service", "carpet cleaning",
                 "cleaning supplies", "janitorial service", "waste disposal"],
    "landlord": ["landlord", "property management", "Vonovia", "office space", "coworking desk",
                 "storage unit", "WeWork"],
    "parking": ["parking", "car park", "parking garage", "parking ticket", "toll",
                "motorway toll", "vignette", "APCOA", "Contipark", "congestion charge"],
}

#: Text templates per account; ``{slot}`` draws from ``_SLOTS``, ``{amount}`` and ``{ref}`` are
#: generated. "conference" appears only in travel templates, so the exercise's example sentence
#: ("taxi to conference") has one clear answer.
TEMPLATES: dict[str, tuple[str, ...]] = {
    TRAVEL: (
        "{ride} to {dest}", "{ride} to {dest} {amount}", "{ride} from {dest} to hotel",
        "{ride} {city} {dest}", "{ride} airport transfer", "{rail} {city} - {city}",
        "{rail} to {city} for conference", "flight {city} {city} {airline}",
        "{airline} flight to {city}", "{airline} boarding pass {ref}", "bus ticket to {city}",
        "{ride} receipt {amount}", "travel to {city} client visit", "rental car {city} Sixt",
        "Europcar car hire {city}", "metro tickets {city} conference", "{ride} late night {city}",
    ),
    "2780 Accommodation": (
        "{hotel} {city} 2 nights", "{hotel} room {city}", "hotel stay {city} {amount}",
        "{hotel} booking {ref}", "overnight stay {city}", "{hotel} invoice {ref}",
        "booking.com {hotel} {city}", "accommodation {city} {month}",
    ),
    "4200 Rent": (
        "office rent {month}", "rent {month} {landlord}", "{landlord} monthly rent",
        "rent for office {city}", "{landlord} invoice {month}", "lease payment {month}",
    ),
    "4240 Utilities": (
        "{utility} {month}", "{utility_co} {utility}", "{utility_co} invoice {month}",
        "{utility} office {city}", "{utility} advance payment {amount}",
    ),
    "4360 Insurance": (
        "{insurer} {insurance}", "{insurance} {month}", "{insurance} annual premium",
        "{insurer} policy {ref}", "{insurance} {amount}",
    ),
    "4530 Vehicle fuel": (
        "{fuel} {fuel_kind}", "{fuel_kind} {fuel} station {city}", "{fuel} {fuel_kind} {amount}",
        "{fuel_kind} company car", "petrol station {fuel}", "EV charging {city}",
    ),
    "4580 Parking and tolls": (
        "{parking} {city}", "{parking} {amount}", "{parking} at client office",
        "{parking} airport", "{parking} {month}",
    ),
    "4610 Advertising": (
        "{ad} {month}", "{ad} campaign", "{ad} {amount}", "{ad} invoice {ref}",
        "marketing {ad}", "{ad} for product launch",
    ),
    "4650 Meals and entertainment": (
        "{meal} {restaurant}", "{meal} {city}", "{restaurant} {meal} {amount}",
        "{restaurant} receipt", "{meal}", "catering for {meal}", "drinks with client {restaurant}",
    ),
    "4805 Repairs and maintenance": (
        "{repair} {repair_thing}", "{repair_thing} {repair}", "{repair} {repair_thing} {amount}",
        "{repair_thing} service call", "invoice {repair} {ref}",
    ),
    "4900 Bank fees": (
        "{bank} {bank_fee}", "{bank_fee} {month}", "{bank} {bank_fee} {amount}",
        "{bank_fee}", "{bank} charges {month}",
    ),
    OFFICE: (
        "{office_item}", "{office_item} {office_vendor}", "{office_vendor} {office_item} {amount}",
        "printer toner {toner_model}", "{toner_model} toner", "{toner_model} ink cartridge",
        "{office_item} and {office_item}", "{office_vendor} order {ref}",
        "office supplies {office_vendor}",
    ),
    "6310 Postage and shipping": (
        "{carrier} {parcel}", "{parcel} {carrier} {amount}", "{carrier} invoice {ref}",
        "{parcel} to {city}", "{carrier} {parcel} to customer",
    ),
    "6330 Books and periodicals": (
        "{book} {publisher}", "{publisher} {book}", "{publisher} {amount}",
        "{book} on {topic}", "{publisher} annual {book}",
    ),
    "6420 Membership fees": (
        "{association} membership", "{association} annual fee", "membership {association} {month}",
        "{association} dues {amount}", "{association} contribution",
    ),
    SOFTWARE: (
        "{saas} {plan}", "{saas} {plan} {amount}", "{saas} invoice {ref}", "{saas} {month}",
        "{saas}", "{plan} {saas}", "{saas} {plan} {month}", "SaaS {saas}",
        "cloud hosting AWS {month}", "Heroku dynos {month}", "DigitalOcean droplet",
    ),
    "6545 Computer hardware": (
        "{hardware}", "{hw_vendor} {hardware}", "{hardware} {hw_vendor} {amount}",
        "new {hardware} for developer", "{hw_vendor} order {ref}", "{hardware} and {hardware}",
    ),
    "6805 Telephone and internet": (
        "{telco} {tel_item}", "{tel_item} {month}", "{telco} {month}", "{tel_item} {amount}",
        "{telco} invoice {ref}",
    ),
    "6821 Training and education": (
        "{course} {topic}", "{topic} {course}", "{course} {amount}", "{course} for staff",
        "{course} {topic} {city}", "{topic} certification",
    ),
    "6825 Legal and consulting fees": (
        "{lawyer}", "{lawyer} {ref}", "{lawyer} fees {month}", "{lawyer} {amount}",
        "{lawyer} for contract",
    ),
    "6827 Accounting and audit fees": (
        "{accountant}", "{accountant} {month}", "{accountant} fee {amount}",
        "{accountant} invoice {ref}", "{accountant} year end",
    ),
    "6850 Cleaning": (
        "{cleaning}", "{cleaning} {month}", "{cleaning} {amount}", "{cleaning} office {city}",
        "{cleaning} invoice {ref}",
    ),
}

_KEYBOARD_NEIGHBOURS = {
    "a": "sq", "e": "wr", "i": "uo", "o": "ip", "n": "bm", "r": "et", "t": "ry", "s": "ad",
    "l": "k", "c": "xv", "p": "o", "m": "n", "u": "yi", "h": "gj",
}


def _amount(rng: random.Random) -> str:
    value = rng.choice([rng.uniform(2, 60), rng.uniform(20, 400), rng.uniform(100, 3000)])
    style = rng.randrange(5)
    if style == 0:
        return f"EUR {value:.2f}"
    if style == 1:
        return f"{value:.2f} EUR"
    if style == 2:
        return f"\u20ac{value:.2f}"
    if style == 3:
        return f"${value:.0f}"
    return f"{value:.2f}".replace(".", ",") + " \u20ac"


def _ref(rng: random.Random) -> str:
    prefix = rng.choice(["inv", "INV-", "#", "no. ", "ref ", "R"])
    return f"{prefix}{rng.randrange(1000, 999999)}"


def _typo(word: str, rng: random.Random) -> str:
    """One realistic slip: a swapped pair, a dropped letter, a doubled letter or a neighbour key."""
    if len(word) < 4 or not word.isalpha():
        return word
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    if kind == 2:
        return word[:i] + word[i] + word[i:]
    near = _KEYBOARD_NEIGHBOURS.get(word[i].lower())
    return word[:i] + rng.choice(near) + word[i + 1:] if near else word


def _case(text: str, rng: random.Random) -> str:
    style = rng.random()
    if style < 0.55:
        return text
    if style < 0.75:
        return text[:1].upper() + text[1:]
    if style < 0.9:
        return text.lower()
    return text.upper()


def _render(template: str, rng: random.Random) -> str:
    makers: dict[str, Callable[[], str]] = {
        "amount": lambda: _amount(rng),
        "ref": lambda: _ref(rng),
    }
    out: list[str] = []
    rest = template
    while "{" in rest:
        head, _, tail = rest.partition("{")
        slot, _, rest = tail.partition("}")
        out.append(head)
        out.append(makers[slot]() if slot in makers else rng.choice(_SLOTS[slot]))
    out.append(rest)
    return "".join(out)


def make_corpus(n: int = 2000, seed: int = 0) -> tuple[list[str], list[str]]:
    """Return ``n`` expense texts and their ledger accounts, deterministically for ``seed``.

    Every account in ``ACCOUNTS`` appears (for ``n >= len(ACCOUNTS)``); travel and office
    supplies are more frequent, as in a real ledger. About one text in eight carries a typo,
    and casing varies.

    >>> texts, labels = make_corpus(3, seed=1)
    >>> len(texts), len(labels)
    (3, 3)
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    weights = [3.0 if account in (TRAVEL, OFFICE, SOFTWARE) else 1.0 for account in ACCOUNTS]
    # The first pass over ACCOUNTS guarantees every class is present, so a model trained on a
    # small corpus still knows every account; the rest follows the weights.
    labels = list(ACCOUNTS[:n]) + rng.choices(ACCOUNTS, weights=weights, k=max(0, n - len(ACCOUNTS)))
    rng.shuffle(labels)
    texts = []
    for account in labels:
        text = _render(rng.choice(TEMPLATES[account]), rng)
        if rng.random() < 0.125:
            words = text.split(" ")
            j = rng.randrange(len(words))
            words[j] = _typo(words[j], rng)
            text = " ".join(words)
        texts.append(_case(text, rng))
    return texts, labels


def train(texts: list[str], labels: list[str]) -> Pipeline:
    """Fit the account-suggestion model: TF-IDF on words and word pairs, then multinomial NB.

    ``predict`` takes a list of texts and returns account names; ``predict_proba`` gives one
    column per account in ``model.classes_`` order.
    """
    model = Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
        ("nb", MultinomialNB(alpha=0.1)),
    ])
    return model.fit(texts, labels)
