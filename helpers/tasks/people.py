"""Name pools and world-building vocabulary; tests draw people from a pool that training never sees."""

SEEN_FIRST_NAMES = (
    "Alice", "Brian", "Carla", "Daniel", "Emma", "Felix", "Grace", "Henry", "Isabel", "Jacob", "Karen", "Liam",
    "Maya", "Nathan", "Olivia", "Peter", "Quinn", "Rachel", "Samuel", "Tara", "Victor", "Wendy", "Xavier", "Yara",
    "Zoe", "Aaron", "Bianca", "Caleb", "Diana", "Ethan",
)
SEEN_LAST_NAMES = (
    "Chen", "Garcia", "Patel", "Nguyen", "Smith", "Johnson", "Kim", "Lopez", "Brown", "Wilson", "Martin", "Clark",
    "Lewis", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill",
    "Campbell", "Mitchell", "Roberts", "Carter", "Phillips", "Evans",
)
UNSEEN_FIRST_NAMES = (
    "Amara", "Bruno", "Celeste", "Dmitri", "Elena", "Farid", "Gloria", "Hiro", "Ingrid", "Jonas", "Keiko", "Luca",
    "Mirela", "Nikolai", "Oksana", "Pablo", "Rosa", "Sven", "Thea", "Ulrich", "Vera", "Wanjiru", "Yusuf", "Zelda",
)
UNSEEN_LAST_NAMES = (
    "Okafor", "Silva", "Haddad", "Kowalski", "Moreau", "Tanaka", "Lindqvist", "Rossi", "Novak", "Ferreira",
    "Ivanova", "Mensah", "Dubois", "Yamamoto", "Castillo", "Bergstrom", "Petrov", "Achebe", "Santos", "Kaur",
)
NAME_POOLS = {
    "seen": (SEEN_FIRST_NAMES, SEEN_LAST_NAMES),
    "unseen": (UNSEEN_FIRST_NAMES, UNSEEN_LAST_NAMES),
}
RELATIONSHIPS = ("friend", "coworker", "sister", "brother", "roommate", "mother", "father", "cousin", "neighbor")
EMAIL_DOMAINS = ("example.com", "mail.example", "inbox.example")
NOTES = (
    "lunch", "dinner", "rent", "groceries", "concert tickets", "Uber", "coffee", "movie night", "gas",
    "birthday gift", "utilities", "pizza", "book club", "taxi", "brunch", "gym pass", "phone bill", "snacks",
)
CARD_NAMES = ("Chase Sapphire", "Amex Gold", "Citi Double Cash", "Discover It", "Capital One Venture", "Wells Fargo Active")
