"""The start-up quality gate: a precision's vectors against fp32 on a fixed sentence set."""

from __future__ import annotations

import numpy as np

_LONG_EN = (
    "Last spring my sister Lin and I drove from Hangzhou to the mountains for a week. "
    "The first two days it rained without a break, so we stayed in a tiny guesthouse, "
    "played cards with the owner's grandfather and learned how to roast tea leaves in an "
    "iron wok. When the weather cleared we hiked up to the old temple at dawn; the fog "
    "lay in the valley like milk and we could hear the bells long before we saw the roof. "
    "On the way back the car broke down twice, and a farmer towed us to the next village "
    "with his tractor, refusing any money but accepting a photo of the three of us."
)
_LONG_ZH = (
    "去年春天，我和妹妹从杭州开车去山里住了一个星期。前两天一直下雨，我们就待在一家小民宿里，"
    "和老板的爷爷打牌，还学会了用铁锅炒茶叶。天晴以后，我们在黎明时分爬到山顶的古寺，"
    "山谷里的雾像牛奶一样，我们在看到屋顶之前很久就听到了钟声。回来的路上车坏了两次，"
    "一位农民用拖拉机把我们拖到了下一个村子，他不肯收钱，只收下了我们三个人的一张合影。"
)

GATE_SENTENCES: tuple[str, ...] = (
    "hi",
    "What do I like to drink?",
    "My name is Achen and I love jasmine tea.",
    "Remind me to call the dentist on Thursday morning.",
    "I moved to Berlin in 2019 for a job at a bicycle startup, and I still miss the sea.",
    "Can you recommend a book like the one we talked about last week?",
    "你好",
    "我喜欢喝茉莉花茶。",
    "明天上午十点提醒我给牙医打电话。",
    "我的猫叫豆豆，今年三岁，最喜欢睡在暖气片旁边。",
    _LONG_EN,
    _LONG_ZH,
    _LONG_EN + " " + _LONG_ZH,
)


def min_cosine(vectors: np.ndarray, reference: np.ndarray) -> float:
    """The lowest cosine between matching rows of two sets of unit vectors."""
    return float(np.min(np.sum(vectors * reference, axis=1)))
