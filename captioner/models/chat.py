"""Prompts of chat captioners (Qwen-VL, SmolVLM): one user message, the image then an instruction, through the
checkpoint's own chat template. No Ray here.

A chat model writes any language it is asked for, so each language's prompt is the style's instruction (or the
user's ``--prompt``) with ``{language}`` as the language's English name. SmolVLM's prompt ids come from the
checkpoint's own processor run on a blank image of the run's size (``prompts``): its image tokens, their count and
the template's special tokens are exactly what the processor would give each real image of that size. Qwen's
processors cannot be built without torchvision, so ``qwen_vl.py`` renders ``messages`` itself.
"""

from PIL import Image

from ..config import ModelConfig
from ..media.image import ImageSpec

INSTRUCTIONS = {
    "short": "Describe this image in one sentence, in {language}.",
    "detailed": "Describe this image in detail, in {language}.",
    "paragraph": "Describe this image in one long, detailed paragraph, in {language}.",
}
# The languages a chat captioner is asked for by name: ISO 639-1 code -> English name.
LANGUAGE_NAMES = {
    "ar": "Arabic", "bg": "Bulgarian", "bn": "Bengali", "ca": "Catalan", "cs": "Czech", "da": "Danish",
    "de": "German", "el": "Greek", "en": "English", "es": "Spanish", "et": "Estonian", "fa": "Persian",
    "fi": "Finnish", "fr": "French", "he": "Hebrew", "hi": "Hindi", "hr": "Croatian", "hu": "Hungarian",
    "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian",
    "ms": "Malay", "nl": "Dutch", "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "sk": "Slovak", "sl": "Slovenian", "sr": "Serbian", "sv": "Swedish", "sw": "Swahili",
    "ta": "Tamil", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu", "vi": "Vietnamese",
    "zh": "Chinese",
}


def instruction(settings: ModelConfig, lang: str) -> str:
    """The instruction for captions in ``lang``: ``--prompt`` or the caption style's, ``{language}`` filled in."""
    template = settings.prompt if settings.prompt is not None else INSTRUCTIONS[settings.caption_style]
    return template.replace("{language}", LANGUAGE_NAMES[lang])


def messages(settings: ModelConfig) -> dict[str, list[dict]]:
    """Every language's chat: one user message, the image then the instruction."""
    return {lang: [{"role": "user", "content": [{"type": "image"},
                                                {"type": "text", "text": instruction(settings, lang)}]}]
            for lang in LANGUAGE_NAMES}


def prompts(processor, settings: ModelConfig, image: ImageSpec) -> dict[str, tuple[int, ...]]:
    """Every language's prompt ids, as the checkpoint's processor makes them for an image of ``image``'s size."""
    blank = Image.new("RGB", (image.resize.width, image.resize.height))
    out = {}
    for lang, chat in messages(settings).items():
        text = processor.apply_chat_template(chat, add_generation_prompt=True)
        ids = processor(text=[text], images=[[blank]], return_tensors="pt").input_ids[0]
        out[lang] = tuple(ids.tolist())
    return out
