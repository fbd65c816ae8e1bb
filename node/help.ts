/** Help text for the `sipmesh` commands: two aligned columns, the right one wrapped. */

/**
 * Rows of `[flag with its value name, description]` as lines: the descriptions start in one
 * column (after the longest flag) and wrap within `width` characters, continuation lines indented
 * to that column. A flag too long for a sane column gets its description on the next line.
 */
export function helpColumns (rows: ReadonlyArray<readonly [string, string]>, width = 100): string[] {
  const longest = Math.max(...rows.map(([left]) => left.length))
  const column = 2 + Math.min(longest, 34) + 2
  const room = Math.max(30, width - column)
  const lines: string[] = []
  for (const [left, right] of rows) {
    const wrapped = wrap(right, room)
    if (2 + left.length + 2 > column) {
      lines.push(`  ${left}`)
    } else {
      lines.push(`  ${left.padEnd(column - 4)}  ${wrapped.shift() ?? ''}`.trimEnd())
    }
    for (const rest of wrapped) lines.push(' '.repeat(column) + rest)
  }
  return lines
}

function wrap (text: string, width: number): string[] {
  const out: string[] = []
  let line = ''
  for (const word of text.split(/\s+/u).filter(w => w !== '')) {
    if (line !== '' && line.length + 1 + word.length > width) {
      out.push(line)
      line = word
    } else {
      line = line === '' ? word : `${line} ${word}`
    }
  }
  if (line !== '') out.push(line)
  return out
}
