"""The user documentation stays usable: README.md and docs/*.md.

- every relative Markdown link (and image) points at a file or folder of the
  repository, and every ``#anchor`` at a heading of its target;
- every repository path written in code (``configs/...``, ``tools/...``) in
  those files exists, so a renamed file cannot leave the docs behind;
- no user-facing file points at the session notes outside the repository
  (``METHOD.md``, ``DATASETS.md``, ``../shared``).
"""
import glob
import os
import os.path as osp
import re

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))

#: Top-level folders whose paths, written in code spans or code blocks, are
#: checked for existence.
CHECKED_ROOTS = ('configs', 'lpd_mmseg', 'tools', 'benchmarks', 'tests',
                 'docs')
#: User-facing files and folders that must not mention the notes.
USER_FACING = ('README.md', 'docs', 'configs', 'lpd_mmseg', 'tools',
               'benchmarks')
FORBIDDEN = ('METHOD.md', 'DATASETS.md', '../shared', 'shared/docs')
TEXT_SUFFIXES = ('.md', '.py', '.sh', '.txt', '.json', '.cfg', '.toml',
                 '.yaml', '.yml')

_FENCE = re.compile(r'^(```|~~~).*?^\1[^\n]*$', re.M | re.S)
_CODE_SPAN = re.compile(r'(`+)(.+?)\1', re.S)
_INLINE_LINK = re.compile(r'!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\)')
_REF_LINK = re.compile(r'^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$', re.M)
_HEADING = re.compile(r'^#{1,6}\s+(.+?)\s*#*\s*$', re.M)
_PATH_TOKEN = re.compile(
    r'(?<![\w./-])((?:%s)/[\w.+/*-]*)' % '|'.join(CHECKED_ROOTS))


def markdown_files():
    """README.md and docs/*.md, as paths relative to the repository."""
    files = ['README.md'] + sorted(
        osp.relpath(p, REPO) for p in glob.glob(osp.join(REPO, 'docs',
                                                         '*.md')))
    return [f for f in files if osp.isfile(osp.join(REPO, f))]


def strip_code(text):
    """Markdown without fenced blocks and code spans (links there are not
    links)."""
    text = _FENCE.sub('', text)
    return _CODE_SPAN.sub('code', text)


def code_texts(text):
    """The contents of fenced blocks and code spans."""
    blocks = [m.group(0) for m in _FENCE.finditer(text)]
    rest = _FENCE.sub('', text)
    return blocks + [m.group(2) for m in _CODE_SPAN.finditer(rest)]


def link_targets(text):
    """Targets of inline links, images and reference definitions."""
    prose = strip_code(text)
    return _INLINE_LINK.findall(prose) + _REF_LINK.findall(prose)


def is_external(target):
    return bool(re.match(r'^[a-zA-Z][a-zA-Z0-9+.-]*:', target)) or \
        target.startswith('//')


def heading_anchor(heading):
    """GitHub's anchor of a heading: lower case, code marks and punctuation
    dropped, spaces to hyphens."""
    heading = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)
    heading = heading.replace('`', '').strip().lower()
    heading = re.sub(r'[^\w\- ]', '', heading)
    return heading.replace(' ', '-')


def anchors_of(text):
    """Anchors of all headings of a Markdown text (repeats get ``-1``,
    ``-2``, ... as on GitHub)."""
    anchors, seen = set(), {}
    for heading in _HEADING.findall(_FENCE.sub('', text)):
        slug = heading_anchor(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f'{slug}-{count}')
    return anchors


def broken_links(md_file, text):
    """``(target, reason)`` for every relative link of ``md_file`` (a path
    relative to the repository) that does not resolve."""
    problems = []
    base = osp.dirname(md_file)
    for target in link_targets(text):
        if is_external(target):
            continue
        path, _, anchor = target.partition('#')
        resolved = osp.normpath(osp.join(base, path)) if path else md_file
        if resolved.startswith('..'):
            problems.append((target, 'points outside the repository'))
            continue
        full = osp.join(REPO, resolved)
        if not osp.exists(full):
            problems.append((target, f'{resolved} does not exist'))
            continue
        if not anchor or not resolved.endswith('.md'):
            continue
        target_text = text if resolved == md_file else _read(resolved)
        if anchor not in anchors_of(target_text):
            problems.append((target, f'no heading #{anchor} in {resolved}'))
    return problems


def missing_code_paths(text):
    """Repository paths written in code that do not exist (paths with
    wildcards or ellipses are patterns, not paths, and are skipped)."""
    missing = []
    for code in code_texts(text):
        for token in _PATH_TOKEN.findall(code):
            token = token.rstrip('.,:;')
            if '*' in token or '..' in token:
                continue
            if not osp.exists(osp.join(REPO, token)):
                missing.append(token)
    return sorted(set(missing))


def _read(rel):
    with open(osp.join(REPO, rel), encoding='utf-8') as f:
        return f.read()


@pytest.mark.parametrize('md_file', markdown_files())
def test_relative_links_resolve(md_file):
    problems = broken_links(md_file, _read(md_file))
    assert not problems, f'{md_file}: broken links {problems}'


@pytest.mark.parametrize('md_file', markdown_files())
def test_paths_in_code_exist(md_file):
    missing = missing_code_paths(_read(md_file))
    assert not missing, (f'{md_file} names repository paths that do not '
                         f'exist: {missing}')


def test_readme_links_every_doc_page():
    readme_targets = {osp.normpath(t.partition('#')[0])
                      for t in link_targets(_read('README.md'))}
    pages = {osp.relpath(p, REPO)
             for p in glob.glob(osp.join(REPO, 'docs', '*.md'))}
    unlinked = sorted(pages - readme_targets)
    assert not unlinked, f'README.md does not link {unlinked}'


def _user_facing_files():
    for entry in USER_FACING:
        full = osp.join(REPO, entry)
        if osp.isfile(full):
            yield entry
            continue
        for root, dirs, files in os.walk(full):
            dirs[:] = [d for d in dirs
                       if d != '__pycache__' and not d.startswith('.')]
            for name in files:
                if name.endswith(TEXT_SUFFIXES):
                    yield osp.relpath(osp.join(root, name), REPO)


def test_no_pointers_to_notes_outside_the_repository():
    offenders = []
    for rel in _user_facing_files():
        for number, line in enumerate(_read(rel).splitlines(), 1):
            offenders += [f'{rel}:{number}: {word}' for word in FORBIDDEN
                          if word in line]
    assert not offenders, ('user-facing files point outside the repository; '
                           'use docs/method.md or docs/datasets.md:\n' +
                           '\n'.join(offenders))


# ------------------------------------------------------ the checks themselves
SAMPLE = """# Title
## Two words `here`
See [ok](README.md), [crf](docs/crf.md), [gone](docs/nope.md),
[anchor](#two-words-here), [bad anchor](#missing), [out](../x.md),
[web](https://example.org/a.md), ![img](docs/none.png).
`[not a link](docs/nope2.md)`

```bash
python tools/train.py configs/none/missing.py
python tools/test.py configs/lpd/*.py
```
[ref]: docs/also_missing.md
"""


def test_checker_finds_each_kind_of_broken_link():
    problems = dict(broken_links('README.md', SAMPLE))
    assert set(problems) == {'docs/nope.md', '#missing', '../x.md',
                             'docs/none.png', 'docs/also_missing.md'}


def test_checker_finds_missing_code_paths():
    assert missing_code_paths(SAMPLE) == ['configs/none/missing.py',
                                          'docs/nope2.md']


def test_heading_anchor_follows_github():
    assert heading_anchor('`make demo`') == 'make-demo'
    assert heading_anchor('Results, and how far to trust them') == \
        'results-and-how-far-to-trust-them'
    assert heading_anchor('Cost (CPU)') == 'cost-cpu'
