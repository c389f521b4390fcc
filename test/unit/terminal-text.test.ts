import { describe, expect, it } from '@jest/globals';
import { formatFields, formatTable } from '../../src/cli/table.js';
import { safeCell, safeLines } from '../../src/cli/terminal-text.js';

describe('text shown on an operator terminal', () => {
  it('escapes every control character, ANSI and OSC sequences, C1 controls and bidi overrides', () => {
    expect(safeCell('a\u001b[2J\u001b]0;owned\u0007b\u009bc\u202eevil\u2066d\u007f')).toBe('a\\e[2J\\e]0;owned\\x07b\\x9bc\\u{202e}evil\\u{2066}d\\x7f');
    expect(safeCell('line 1\nline 2\ttab\rcr')).toBe('line 1\\nline 2\\ttab\\rcr');
  });

  it('keeps newlines and tabs in multi-line text, and leaves ordinary text (unicode included) alone', () => {
    expect(safeLines('one\ntwo\t\u001b[31mred')).toBe('one\ntwo\t\\e[31mred');
    expect(safeLines('sandbox-é-🚀 ok')).toBe('sandbox-é-🚀 ok');
  });

  it('tables and field lists escape their cells: a label value cannot break a row or colour the screen', () => {
    const table = formatTable(['ID', 'LABELS'], [['sb-1', 'team=a\n\u001b[1mfake-row']]);
    expect(table).toBe('ID     LABELS\nsb-1   team=a\\n\\e[1mfake-row\n');
    expect(formatFields([['Stderr tail', 'line 1\n\u001b]8;;http://x\u0007link']])).toBe('Stderr tail: line 1\n             \\e]8;;http://x\\x07link\n');
  });
});
