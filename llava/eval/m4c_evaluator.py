"""EvalAI answer normalisation and the TextVQA soft accuracy.

    normalise = EvalAIAnswerProcessor()
    normalise("The Two Dogs.")                     # "2 dogs"
    TextVQAAccuracyEvaluator().eval_pred_list([{"pred_answer": "2 dogs", "gt_answers": ten_answers}])

The normalisation is the one the VQA/TextVQA/VizWiz servers apply (spec §4.4), quirks
included: punctuation is deleted or turned into a space depending on the *whole* string,
and at most 32 periods are removed (upstream passes ``re.UNICODE`` where ``re.sub`` expects
a count). The STVQA and TextCaps evaluators of upstream are not used by LLaVA-1.5 and are
not provided.
"""
from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, Sequence

from tqdm import tqdm

NUMBER_WORDS: Dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})

# The VQA evaluation's contraction table, entries as the servers have them (the ones with
# capitals never match lower-cased text; "somebody'd" really maps to "somebodyd").
CONTRACTIONS: Dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d)(,)+(?=\d)")
# a period not followed by a digit (upstream's "(?!<=\d)" is a look-ahead that always passes)
PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# upstream calls PERIOD_STRIP.sub("", text, re.UNICODE): the flag lands in the count slot
MAX_PERIODS_REMOVED = int(re.UNICODE)
TEXTVQA_ANSWERS_PER_QUESTION = 10
# a GT answer given by this many of the other annotators scores 1
TEXTVQA_FULL_SCORE_MATCHES = 3


class EvalAIAnswerProcessor:
    """Callable normalising an answer string the way EvalAI's VQA evaluation does."""

    def word_tokenize(self, text: str) -> str:
        """Step 1: lower-case, delete "," and "?", split off "'s", strip."""
        text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
        return text.strip()

    def process_punctuation(self, text: str) -> str:
        """Step 3 and 4: punctuation and periods.

        Each punctuation mark is deleted when it touches a space somewhere in ``text``
        (or ``text`` has a digit-comma-digit), else turned into a space; the test looks
        at the input, not at the partly processed string. Then the first 32 periods
        not followed by a digit are deleted.
        """
        delete_all = DIGIT_COMMA_DIGIT.search(text) is not None
        out = text
        for mark in PUNCTUATION:
            if delete_all or mark + " " in text or " " + mark in text:
                out = out.replace(mark, "")
            else:
                out = out.replace(mark, " ")
        return PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=MAX_PERIODS_REMOVED)

    def process_digit_article(self, text: str) -> str:
        """Step 5: number words to digits, articles dropped, contractions expanded."""
        words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
        words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
        return " ".join(words)

    def __call__(self, answer: str) -> str:
        """The normalised answer.

        Args:
            answer: raw answer text.

        Returns:
            Normalised text (words separated by single spaces).
        """
        text = self.word_tokenize(answer)
        text = text.replace("\n", " ").replace("\t", " ").strip()
        return self.process_digit_article(self.process_punctuation(text))


class TextVQAAccuracyEvaluator:
    """TextVQA soft accuracy: leave-one-out agreement with 10 human answers."""

    def __init__(self) -> None:
        self.answer_processor = EvalAIAnswerProcessor()

    def answer_scores(self, raw_answers: Sequence[str]) -> Dict[str, float]:
        """Score of each distinct normalised GT answer.

        score(a) = mean over the 10 ways of leaving one annotator out of
        ``min(1, matches of a among the other 9 / 3)``.

        Args:
            raw_answers: the 10 human answers.

        Returns:
            {normalised answer: score in [0, 1]}.

        Raises:
            ValueError: there are not exactly 10 answers.
        """
        answers = [self.answer_processor(a) for a in raw_answers]
        if len(answers) != TEXTVQA_ANSWERS_PER_QUESTION:
            raise ValueError(f"expected {TEXTVQA_ANSWERS_PER_QUESTION} GT answers, got {len(answers)}: {raw_answers!r}")
        scores = {}
        for candidate in set(answers):
            total = answers.count(candidate)
            left_out = [
                min(1, float(total - (held_out == candidate)) / TEXTVQA_FULL_SCORE_MATCHES) for held_out in answers
            ]
            scores[candidate] = sum(left_out) / len(left_out)
        return scores

    def eval_pred_list(self, pred_list: Iterable[Mapping[str, object]]) -> float:
        """Mean soft accuracy of the predictions.

        Args:
            pred_list: entries ``{"pred_answer": str, "gt_answers": [10 str]}``.

        Returns:
            Accuracy as a fraction in [0, 1].

        Raises:
            ValueError: the list is empty or an entry does not have 10 GT answers.
        """
        scores: List[float] = []
        for entry in tqdm(pred_list, desc="TextVQA", unit="q"):
            prediction = self.answer_processor(entry["pred_answer"])
            scores.append(self.answer_scores(entry["gt_answers"]).get(prediction, 0.0))
        if not scores:
            raise ValueError("no predictions to evaluate")
        return sum(scores) / len(scores)
