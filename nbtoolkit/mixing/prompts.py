"""General prompts we wrote, per category, for self-synthesized rehearsal: the base model answers them and its
replies become general data to mix in (no download needed). Every fourth prompt of a category is held out from
training for the retention probe (nbtoolkit.forgetting.retention_probe)."""

from __future__ import annotations

from collections.abc import Sequence

from nbtoolkit.mixing.config import check_category

PROBE_EVERY = 4  # prompts whose index % PROBE_EVERY == PROBE_EVERY - 1 are held out

GENERAL_PROMPTS: dict[str, tuple[str, ...]] = {
    "instruction-following": (
        "Write three tips for staying focused while studying. Use a numbered list.",
        "Rewrite this sentence in the passive voice: The committee approved the new budget.",
        "Give me a one-sentence summary of why sleep matters for health.",
        "List five fruits that are high in vitamin C, separated by commas.",
        "Write a short, polite email declining a meeting invitation.",
        "Explain what a noun is in exactly two sentences.",
        "Turn these words into a sentence: river, morning, quiet, boat.",
        "Give three synonyms for the word 'happy'.",
        "Write a haiku about autumn leaves.",
        "Describe a cat to someone who has never seen one, in under 50 words.",
        "Sort these numbers from smallest to largest: 42, 7, 19, 3, 28.",
        "Answer with yes or no only: Is water wet?",
    ),
    "reasoning-instruction-following": (
        "Think step by step: a shop sells pens at 3 for $2. How much do 12 pens cost? Give the final answer on the "
        "last line.",
        "Read the rules, then answer. Rule 1: all answers must be one word. Rule 2: use lowercase. What color is "
        "the sky on a clear day?",
        "Explain your reasoning, then answer: if today is Monday, what day will it be in 10 days?",
        "Follow these steps: take the word 'planet', reverse it, then make it uppercase. What do you get?",
        "First list the facts you know, then answer: which is heavier, a kilogram of feathers or a kilogram of "
        "iron?",
        "Answer in JSON with the keys 'city' and 'country': where is the Eiffel Tower?",
        "Reason briefly, then give a one-word answer: is 17 a prime number?",
        "Classify the sentiment of 'The movie was a total waste of time' as positive or negative, and explain why "
        "in one sentence.",
        "Given the list [apple, car, banana, bus, cherry], return only the fruits, as a comma-separated list.",
        "Step by step: Tom is older than Ann, and Ann is older than Bo. Who is the youngest?",
        "Count the vowels in the word 'education', showing each one.",
        "Decide whether this question is clear or unclear, then say why: 'How do I fix it?'",
    ),
    "chat": (
        "Hi! How are you doing today?",
        "I just got a new puppy. Any advice for the first week?",
        "Can you recommend a good way to relax after work?",
        "I'm nervous about a job interview tomorrow. What should I do?",
        "What's a fun hobby I could start this weekend?",
        "Tell me something interesting about octopuses.",
        "I feel like I never have enough time. Any ideas?",
        "What do you think makes a good friend?",
    ),
    "math": (
        "What is 15% of 80?",
        "Solve for x: 3x + 7 = 22.",
        "A rectangle is 8 cm long and 5 cm wide. What is its area?",
        "What is the sum of the angles in a triangle?",
        "Convert 3/4 to a decimal.",
        "If a train travels 60 km in 45 minutes, what is its speed in km per hour?",
        "What is the least common multiple of 4 and 6?",
        "Simplify the fraction 18/24.",
    ),
    "reasoning-math": (
        "Sara has 3 boxes with 12 apples each. She gives away 10 apples. How many are left? Show your steps.",
        "A book costs $15 after a 25% discount. What was the original price? Explain.",
        "The average of three numbers is 10. Two of them are 8 and 9. What is the third? Reason step by step.",
        "A tank fills in 6 hours with one pipe and 3 hours with another. How long with both? Work it out.",
        "If 5 workers build a wall in 8 days, how long do 10 workers take at the same rate? Explain.",
        "What is the next number in the sequence 2, 6, 12, 20, 30? Explain the pattern.",
    ),
    "baseline": (
        "What is the capital of Japan?",
        "Who wrote the play Romeo and Juliet?",
        "What is photosynthesis?",
        "How many continents are there, and what are they?",
        "What is the largest planet in our solar system?",
        "What language is mainly spoken in Brazil?",
        "What does the heart do in the human body?",
        "In which year did humans first land on the Moon?",
    ),
    "factuality": (
        "Is the Great Wall of China visible from space with the naked eye? Answer carefully.",
        "Do humans use only 10% of their brains?",
        "What is the boiling point of water at sea level in Celsius?",
        "Is a tomato a fruit or a vegetable, botanically speaking?",
        "How long does light from the Sun take to reach Earth, roughly?",
        "Did Albert Einstein fail mathematics in school?",
    ),
    "stem": (
        "What is Newton's second law of motion?",
        "Explain the difference between an atom and a molecule.",
        "What does DNA stand for, and what does it do?",
        "Why do objects float or sink in water?",
        "What is the difference between speed and velocity?",
        "What is a chemical reaction? Give an example.",
        "How does a computer store numbers?",
        "What causes the seasons on Earth?",
    ),
    "reasoning-stem": (
        "Why does ice float on water? Explain the reasoning.",
        "A ball is dropped from a height. Why does it fall faster and faster? Explain step by step.",
        "Why do we see lightning before we hear thunder? Reason it out.",
        "If you double the voltage across a resistor, what happens to the current? Explain.",
        "Why does a metal spoon feel colder than a wooden one at the same temperature?",
        "Why do plants need sunlight? Walk through the process.",
    ),
    "planning": (
        "Make a simple plan for cleaning a messy garage in one afternoon.",
        "Plan a three-day trip to a city you have never visited. Keep it short.",
        "What steps should I take to learn a new programming language?",
        "Help me plan a healthy weekly grocery list on a small budget.",
        "Outline the steps to prepare for a 5 km run in two months.",
        "Plan a birthday party for ten children.",
    ),
    "reasoning-planning": (
        "I have 2 hours, a report due and laundry to do. The washer takes 1 hour and needs no attention. How should "
        "I order my tasks? Explain.",
        "You must visit the bank (closes at 3 pm), the gym (open all day) and the post office (closes at 1 pm). In "
        "what order should you go if you start at noon? Reason it out.",
        "A recipe needs the oven preheated for 15 minutes and 20 minutes of chopping. How can I save time? Explain.",
        "I need to move a fox, a chicken and a sack of grain across a river one at a time. What is the plan?",
        "Three friends must meet, but each is free on different days. How would you find a common day? Describe "
        "the reasoning.",
        "How would you split a 10-page translation among 3 people fairly? Explain your reasoning.",
    ),
    "reasoning-chat": (
        "My friend says cats are better than dogs. How could we settle this in a friendly way? Think it through.",
        "I can't decide between two jobs: one pays more, the other is closer to home. Help me think about it.",
        "Should I learn to cook or keep ordering food? Weigh the pros and cons.",
        "My plant keeps dying. Let's figure out why together. What questions should we ask?",
        "Is it better to read a book or watch the movie first? Reason about it.",
        "How do I decide whether to buy a new phone or repair my old one?",
    ),
    "reasoning-code": (
        "What does this Python code print, and why? x = [1, 2, 3]; print(len(x) * 2)",
        "Explain step by step what a for loop does, with a small example.",
        "Why might this code fail? numbers = [1, 2, 3]; print(numbers[3])",
        "Write a Python function that returns the largest number in a list, and explain how it works.",
        "What is the difference between a list and a dictionary in Python? Explain with an example.",
        "How would you check whether a word is a palindrome in code? Reason through it.",
    ),
    "reasoning-factuality": (
        "Someone claims that lightning never strikes the same place twice. Is that true? Reason about it.",
        "Can you see stars during the day? Explain why or why not.",
        "Is it true that goldfish have a three-second memory? Think about the evidence.",
        "Why is the sky blue? Check the common explanations and give the right one.",
        "Do bulls get angry at the color red? Reason it out.",
        "Is Mount Everest the tallest mountain from base to peak? Explain carefully.",
    ),
    "rai": (
        "How can I stay safe when meeting someone from the internet for the first time?",
        "Someone asked me to share my password to fix my account. Should I?",
        "How do I respond politely when someone tells an offensive joke?",
        "What should I do if I see someone being bullied at school?",
        "Can you help me write a fake doctor's note?",
        "How should I store medicine safely in a home with children?",
    ),
    "reasoning-rai": (
        "A stranger online offers a job that pays a lot for little work but asks for my bank details. Think about "
        "whether this is safe.",
        "My friend wants to drive home after drinking. What should I do? Reason it through.",
        "Is it okay to use someone else's photo in my project without asking? Explain the reasoning.",
        "Someone asks how to get into their neighbor's Wi-Fi without permission. How should an assistant respond, "
        "and why?",
        "A coworker shares private information about a colleague. What is the right thing to do? Think it "
        "through.",
        "How can I tell whether a news story is reliable before sharing it? Walk through the steps.",
    ),
    "identity": (
        "Who are you?",
        "What can you help me with?",
        "Are you a human or a computer program?",
        "Do you have feelings?",
        "Can you browse the internet right now?",
        "What should I keep in mind when relying on your answers?",
    ),
    "translation": (
        "Translate into French: Good morning, how are you?",
        "Translate into Spanish: Where is the train station?",
        "What does 'danke schön' mean in English?",
        "Translate into German: I like to read books.",
        "How do you say 'thank you' in Italian?",
        "Translate into English: Je voudrais un café, s'il vous plaît.",
    ),
    "rag": (
        "Passage: The Amazon River flows through South America and carries more water than any other river. "
        "Question: Which continent does the Amazon River flow through?",
        "Passage: Honey bees live in colonies with one queen, thousands of workers and some drones. Question: How "
        "many queens does a colony have?",
        "Passage: The library opens at 9 am on weekdays and at 11 am on weekends. Question: When does the library "
        "open on Saturday?",
        "Passage: Mercury is the closest planet to the Sun and has almost no atmosphere. Question: Which planet is "
        "closest to the Sun?",
        "Passage: The recipe needs two eggs, a cup of flour and half a cup of milk. Question: How much milk does "
        "the recipe need?",
        "Passage: The museum is closed on Mondays. Tickets cost $12 for adults and $6 for children. Question: What "
        "does a child's ticket cost?",
    ),
    "reasoning-rag": (
        "Passage: Anna was born in 1990. Her brother is five years younger. Question: In which year was her "
        "brother born? Explain using the passage.",
        "Passage: The store sells apples for $1 each and oranges for $2 each. Ben bought 3 apples and 2 oranges. "
        "Question: How much did Ben spend? Show your reasoning.",
        "Passage: The bus leaves at 8:10 and the trip takes 35 minutes. Question: When does the bus arrive? "
        "Reason from the passage.",
        "Passage: All birds in the park are pigeons or sparrows. There are 20 birds and 12 are pigeons. Question: "
        "How many sparrows are there? Explain.",
        "Passage: The meeting moved from Tuesday to the day after. Question: On which day is the meeting now? "
        "Explain.",
        "Passage: Lisa is taller than Mark. Mark is taller than Jo. Question: Is Jo taller than Lisa? Use the "
        "passage to reason.",
    ),
    "long-context": (
        "Read the notes and answer. Notes: The team met on Monday to discuss the launch. Maria will write the "
        "announcement. Ken will test the app on phones. The launch date is the 14th, unless testing finds a "
        "serious bug, in which case it moves one week later. Ken found only small bugs. Question: When is the "
        "launch?",
        "Story: A farmer had three fields. In the first he grew wheat, in the second corn, and in the third he "
        "kept sheep. One dry summer the wheat failed, the corn grew well, and the sheep were sold at market. "
        "Question: Which crop grew well in the dry summer?",
        "Instructions: To reset the router, unplug it, wait thirty seconds, plug it back in, and wait until the "
        "green light stops blinking. If the light turns red, call support. Question: What should you do if the "
        "light turns red?",
        "Report: Sales rose in spring, fell in summer because of a supply problem, and recovered in autumn after "
        "a new supplier was found. Question: Why did sales fall in summer?",
        "Letter: Dear Sam, I moved to a new flat near the park. It has two rooms and a small balcony. The rent is "
        "lower than before, but the bus ride to work is longer. Question: What is one downside of the new flat?",
        "Minutes: Budget approved. Office move postponed to spring. New hire starts next month. Question: What "
        "was postponed?",
    ),
    "agents": (
        "You can use the tools search(query) and calculator(expression). Which tool would you use to find "
        "today's weather, and with what input?",
        "You have the tools read_file(path) and send_email(to, text). Describe the steps to email the contents of "
        "notes.txt to bob@example.com.",
        "You can call get_time() and set_alarm(time). The user says: wake me up in two hours. What calls do you "
        "make?",
        "Tools: translate(text, language) and summarize(text). A user wants a short Spanish version of a long "
        "English article. In what order do you call the tools?",
        "You can use calculator(expression). A user asks for 17 times 23. What do you do?",
        "Tools: list_files(folder) and delete_file(path). The user says 'clean up my downloads'. What should you "
        "check before deleting anything?",
    ),
}
# One category per SDK name: every category above must be a real SDK category.
for _name in GENERAL_PROMPTS:
    check_category(_name)


def rehearsal_prompts(categories: Sequence[str] | None = None, *, split: str = "train",
                      per_category: int | None = None) -> list[dict]:
    """[{"id", "category", "prompt"}] of the built-in prompts; split "train", "probe" (held out) or "all";
    per_category keeps the first N of each category."""
    if split not in ("train", "probe", "all"):
        raise ValueError(f"split must be 'train', 'probe' or 'all', got {split!r}")
    names = list(GENERAL_PROMPTS) if categories is None else [check_category(c) for c in categories]
    out = []
    for name in names:
        chosen = [(i, prompt) for i, prompt in enumerate(GENERAL_PROMPTS.get(name, ()))
                  if split == "all" or (split == "probe") == (i % PROBE_EVERY == PROBE_EVERY - 1)]
        out += [{"id": f"{name}-{i:02d}", "category": name, "prompt": prompt} for i, prompt in chosen[:per_category]]
    return out
